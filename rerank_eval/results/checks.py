"""A saved result's per-query values checked before anything reads them: a folder may be damaged,
edited or foreign, and a `nan` or a duplicated line in `per_query.csv` would change a mean or a
significance test without a word. Columns, finiteness, stages and uniqueness are checked; the first
problem found is reported in one line. (The manifest's fields are checked in `manifest.py`.)
"""

from __future__ import annotations

import math

import pandas as pd

PER_QUERY_KEY = ["dataset", "stage", "measure", "query_id"]
STAGES = {"first_stage", "reranked"}


def per_query_problem(frame: pd.DataFrame) -> str | None:
    """What is wrong with a per_query.csv table (None when nothing is): its columns, a value that is
    not a finite number or is negative, an unknown stage, or a (dataset, stage, measure, query)
    given twice."""
    expected = [*PER_QUERY_KEY, "value"]
    if sorted(frame.columns) != sorted(expected):
        return f"has columns {', '.join(map(str, frame.columns))}; expected {', '.join(expected)}"
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = frame.index[~values.map(lambda v: math.isfinite(v) if v == v else False)]
    if len(bad):
        return f"line {bad[0] + 2}: value {frame.loc[bad[0], 'value']!r} is not a finite number"
    negative = frame.index[values < 0]
    if len(negative):  # no measure of ir_measures is below zero: an edit, not a result
        return f"line {negative[0] + 2}: value {str(frame.loc[negative[0], 'value'])!r} is negative"
    stages = frame.index[~frame["stage"].isin(STAGES)]
    if len(stages):
        return f"line {stages[0] + 2}: unknown stage {frame.loc[stages[0], 'stage']!r}"
    duplicated = frame.index[frame.duplicated(PER_QUERY_KEY)]
    if len(duplicated):
        row = frame.loc[duplicated[0]]
        what = f"{row['measure']} of query {row['query_id']} ({row['dataset']}, {row['stage']})"
        return f"line {duplicated[0] + 2}: {what} appears twice"
    frame["value"] = values
    return None
