"""The computed values themselves, for other tools: a report's summary CSV (a result folder's, and
`export`'s with the model and suite on every line), a comparison's long and wide CSV and its JSON
(every cell with p-values, intervals and W/T/L)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict

import pandas as pd

from rerank_eval.reporting.compare.comparison import Comparison
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
    return _summary_text(pd.concat(frames, ignore_index=True))


def _summary_text(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.10f")
    return buffer.getvalue()


def long_frame(comparison: Comparison) -> pd.DataFrame:
    records = []
    for row in comparison.rows:
        for label, cell in row.cells.items():
            record = {"dataset": row.name, "kind": row.kind, "run": label, **asdict(cell)}
            interval = record.pop("interval")
            record["ci_low"], record["ci_high"] = interval if interval else (None, None)
            record["baseline"] = label == comparison.baseline.label
            record["published"] = label in {p.label for p in comparison.published}
            record["significant"] = cell.significant
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
    frame = wide_frame(comparison) if wide else long_frame(comparison)
    frame.to_csv(buffer, index=wide, float_format="%.10g")
    return buffer.getvalue()


def comparison_json(comparison: Comparison) -> str:
    payload = {
        "metric": comparison.metric,
        "test": comparison.test,
        "baseline": comparison.baseline.label,
        "runs": [{"label": r.label, "folder": r.folder} for r in comparison.runs],
        "published": [asdict(p) for p in comparison.published],
        "rows": [
            {
                "dataset": row.name,
                "kind": row.kind,
                "members": row.members,
                "cells": {label: asdict(cell) for label, cell in row.cells.items()},
            }
            for row in comparison.rows
        ],
        "notes": comparison.footnotes,
        "warnings": comparison.warnings,
    }
    return json.dumps(payload, indent=2) + "\n"
