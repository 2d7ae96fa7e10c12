"""The computed values themselves, for other tools: a report's summary CSV (a result folder's, and
`export`'s with the model and suite on every line), a comparison's long and wide CSV and its JSON
(every cell with p-values, intervals and W/T/L)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict

import pandas as pd

from rerank_eval.reporting.compare.comparison import Cell, Comparison
from rerank_eval.reporting.compare.stats import ALPHA, RESAMPLES, SEED
from rerank_eval.reporting.report import Report


def summary_csv(report: Report) -> str:
    """A result folder's own `summary.csv`: its model and suite are its manifest's, and it stays
    byte-identical to the one earlier versions wrote."""
    return _summary_text(report.summary_frame())


def labelled_summary_csv(reports: list[Report]) -> str:
    """`export --csv`: one or several results' summaries in one table, each line led by `model` and
    `suite` columns (the manifests' names), so that exports concatenate into one table too."""
    frames = []
    for report in reports:
        frame = report.summary_frame()
        frame.insert(0, "suite", report.manifest.suite.name)
        frame.insert(0, "model", report.manifest.model.name)
        frames.append(frame)
    return _summary_text(spreadsheet_safe(pd.concat(frames, ignore_index=True)))


#: what a spreadsheet takes for the start of a formula when a cell begins with it (OWASP's list)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: object) -> object:
    """A text cell a spreadsheet would run as a formula, led by an apostrophe (which shows it as
    text); numbers and other text as they are."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its text cells, row labels and column names inert in a spreadsheet: an
    export is opened in one, and a model folder named `=HYPERLINK(...)` or an average label
    `@SUM(...)` would run there. A result folder's own files keep names exactly as written."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):  # text, or text mixed with others
            safe[column] = safe[column].map(_inert)
    safe.index = safe.index.map(_inert)
    safe.columns = safe.columns.map(_inert)
    return safe


def _summary_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.10f")
    return buffer.getvalue()


#: the comparison JSON's layout; 2 adds this version, the test's settings, the runs' protocol and
#: each cell's `significant`
COMPARISON_FORMAT = 2


def _significant(cell: Cell) -> bool | None:
    """Whether a tested cell is significant; None (not False) for the baseline, published figures
    and cells without a test, which were never tested."""
    return None if cell.p_adjusted is None else cell.significant


def long_frame(comparison: Comparison) -> pd.DataFrame:
    records = []
    for row in comparison.rows:
        for label, cell in row.cells.items():
            record = {"metric": comparison.metric, "dataset": row.name, "kind": row.kind, "run": label}
            record.update(asdict(cell))
            interval = record.pop("interval")
            record["ci_low"], record["ci_high"] = interval if interval else (None, None)
            record["baseline"] = label == comparison.baseline.label
            record["published"] = label in {p.label for p in comparison.published}
            record["significant"] = _significant(cell)
            record["partial"] = label in row.short  # an average of only some of its rows
            records.append(record)
    return pd.DataFrame.from_records(records)


def wide_frame(comparison: Comparison) -> pd.DataFrame:
    return (
        long_frame(comparison)
        .pivot(index="dataset", columns="run", values="value")
        .reindex([row.name for row in comparison.rows])[comparison.labels]
    )


def comparison_csv(comparison: Comparison, wide: bool = False) -> str:
    buffer = io.StringIO()
    frame = spreadsheet_safe(wide_frame(comparison) if wide else long_frame(comparison))
    frame.to_csv(buffer, index=wide, float_format="%.10g")
    return buffer.getvalue()


def comparison_json(comparison: Comparison) -> str:
    """Everything the tables show, and what it was computed with: the test, α, the correction, the
    seed and resamples, each run's folder, first stages and protocol."""
    payload = {
        "format": COMPARISON_FORMAT,
        "metric": comparison.metric,
        "test": comparison.test,
        "alpha": ALPHA,
        "correction": "Holm-Bonferroni across the compared runs of each row",
        "seed": SEED,
        "resamples": RESAMPLES,
        "interval": "percentile bootstrap 95% of the mean difference (average rows)",
        "baseline": comparison.baseline.label,
        "runs": [
            {
                "label": run.label,
                "folder": run.folder,
                "path": str(run.shown),
                "model": run.manifest.model.name,
                "first_stages": run.manifest.first_stage_labels(),
                "top_k": run.manifest.protocol.top_k,
                "candidate_order": run.manifest.protocol.candidate_order,
            }
            for run in comparison.runs
        ],
        "published": [asdict(p) for p in comparison.published],
        "rows": [
            {
                "dataset": row.name,
                "kind": row.kind,
                "members": row.members,
                "cells": {
                    label: {**asdict(cell), "significant": _significant(cell), "partial": label in row.short}
                    for label, cell in row.cells.items()
                },
            }
            for row in comparison.rows
        ],
        "notes": comparison.footnotes,
        "warnings": comparison.warnings,
    }
    return json.dumps(payload, indent=2) + "\n"
