"""Reporting saved results: one result's report (`report`), comparisons of several (`compare/`),
the rows both use (`layout`), the neutral table they describe themselves as (`table`) and the
neutral bar chart a comparison also describes itself as (`chart`), and their renderings
(`render/`). Only saved per-query values are read; nothing here scores or evaluates."""
