"""Reporting saved results: one result's report (`report`), comparisons of several (`compare/`),
the rows both use (`layout`), the neutral table they describe themselves as (`table`), and its
renderings (`render/`). Only saved per-query values are read; nothing here scores or evaluates."""
