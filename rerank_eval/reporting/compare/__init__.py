"""Comparing saved results: the compared runs (`columns`), the fair-comparison guard (`guard`),
paired tests and intervals (`stats`), published figures (`published`), the computation
(`comparison`), its neutral table (`table`) and its bar chart (`chart`)."""
