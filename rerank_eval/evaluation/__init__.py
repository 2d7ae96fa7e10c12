"""Measures through ir_measures: per-query values, from which every aggregate is derived."""
