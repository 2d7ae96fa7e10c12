"""A saved result folder checked before anything reads it: it may be damaged, edited or foreign.

`export` and `compare` index manifests and per-query values freely; a manifest field of the wrong
type would end in a traceback, and a `nan` or a duplicated line in `per_query.csv` would change a
mean or a significance test without a word. So the fields the readers use are checked for their
types, and per-query values for their columns, finiteness and uniqueness; the first problem found
is reported in one line naming the file.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

NUMBER = (int, float)
# The manifest fields that reports and comparisons read, with their types. A list holds one shape
# that every item must have; a tuple of types accepts any of them.
MANIFEST_SHAPE: dict[str, Any] = {
    "protocol": {"top_k": int, "metrics": [str], "candidate_order": str},
    "suite": {"name": str, "average_label": str},
    "model": {"name": str},
    "datasets": [
        {
            "key": str,
            "ir_datasets_id": str,
            "drop_self_matches": bool,
            "in_average": bool,
            "first_stage": {"label": str, "kind": str},
            "coverage": {"judged_queries": int, "queries_without_run": int},
            "timings": {"rerank_seconds": NUMBER},
        }
    ],
}
PER_QUERY_KEY = ["dataset", "stage", "measure", "query_id"]
STAGES = {"first_stage", "reranked"}


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return "a number"
    return {int: "an integer", bool: "true or false", str: "a string"}.get(expected, "a value")


def shape_problem(value: Any, shape: Any, where: str) -> str | None:
    """Where and how `value` departs from `shape` (None when it fits)."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the top level'} is not a mapping"
        for key, inner in shape.items():
            if key not in value:
                return f"{where + '.' if where else ''}{key} is missing"
            problem = shape_problem(value[key], inner, f"{where + '.' if where else ''}{key}")
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        for index, item in enumerate(value):
            problem = shape_problem(item, shape[0], f"{where}[{index}]")
            if problem:
                return problem
        return None
    wrong_bool = isinstance(value, bool) and shape is not bool
    if wrong_bool or not isinstance(value, shape) or (isinstance(value, float) and not math.isfinite(value)):
        return f"{where} should be {_type_name(shape)}, not {value!r}"[:200]
    return None


def per_query_problem(frame: pd.DataFrame) -> str | None:
    """What is wrong with a per_query.csv table (None when nothing is): its columns, a value that is
    not a finite number, an unknown stage, or a (dataset, stage, measure, query) given twice."""
    expected = [*PER_QUERY_KEY, "value"]
    if sorted(frame.columns) != sorted(expected):
        return f"has columns {', '.join(map(str, frame.columns))}; expected {', '.join(expected)}"
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = frame.index[~values.map(lambda v: math.isfinite(v) if v == v else False)]
    if len(bad):
        return f"line {bad[0] + 2}: value {frame.loc[bad[0], 'value']!r} is not a finite number"
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
