"""A compared run: its per-query values of one measure, read from its saved result folder."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rerank_eval.errors import UserError
from rerank_eval.results.folder import SavedResult
from rerank_eval.results.manifest import Manifest


@dataclass
class RunColumn:
    label: str
    folder: str
    manifest: Manifest
    values: dict[str, pd.Series]  # dataset key -> per-query values (index: query id)
    groups: dict[str, str]  # dataset key -> row name


def run_column(saved: SavedResult, metric: str) -> RunColumn:
    frame = saved.per_query
    selected = frame[(frame.stage == "reranked") & (frame.measure == metric)]
    if selected.empty:
        raise UserError(f"{saved.folder} has no per-query values for {metric}")
    values = {
        dataset: group.set_index("query_id")["value"].astype(float)
        for dataset, group in selected.groupby("dataset", sort=False)
    }
    groups = {d.key: d.row_name for d in saved.manifest.datasets}
    return RunColumn(saved.manifest.model.name, saved.folder.name, saved.manifest, values, groups)


def labelled(columns: list[RunColumn]) -> list[RunColumn]:
    """Model names as labels; folder names where two runs share a model name."""
    labels = [c.label for c in columns]
    for column in columns:
        if labels.count(column.label) > 1:
            column.label = column.folder
    return columns
