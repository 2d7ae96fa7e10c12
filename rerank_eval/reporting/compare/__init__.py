"""Comparing saved results: the compared runs (`columns`), the fair-comparison guard (`guard`),
paired tests and intervals (`stats`), published figures (`published`), the computation
(`comparison`) and its neutral table (`table`)."""
