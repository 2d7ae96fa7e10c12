"""Renderings. Text tables (terminal, Markdown, LaTeX, HTML) lay out a neutral `ResultTable`;
`data` writes the computed values themselves (CSV, JSON) and `plot` draws a neutral `BarChart`."""
