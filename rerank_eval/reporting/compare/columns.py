"""A compared run: its per-query values of one measure, read from its saved result folder."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rerank_eval.errors import UserError, did_you_mean
from rerank_eval.results.folder import SavedResult
from rerank_eval.results.manifest import Manifest
from rerank_eval.textlines import NOT_IN_A_NEW_NAME


@dataclass
class RunColumn:
    label: str
    folder: str  # the result folder's name
    path: Path  # the result folder, resolved: which result this is
    shown: Path  # the result folder as given, made absolute (symlinks kept): where labels come from
    manifest: Manifest
    values: dict[str, pd.Series]  # dataset key -> per-query values (index: query id)
    groups: dict[str, str]  # dataset key -> row name


def run_column(saved: SavedResult, metric: str) -> RunColumn:
    frame = saved.per_query
    selected = frame[(frame.stage == "reranked") & (frame.measure == metric)]
    if selected.empty:
        measures = sorted(set(frame.measure))
        raise UserError(
            f"{saved.folder} has no per-query values for {metric}{did_you_mean(metric, measures)}; "
            f"it has: {', '.join(measures)}"
        )
    values = {
        dataset: group.set_index("query_id")["value"].astype(float)
        for dataset, group in selected.groupby("dataset", sort=False)
    }
    groups = {d.key: d.row_name for d in saved.manifest.datasets}
    folder = saved.folder
    return RunColumn(
        _printable(saved.manifest.model.name),  # (a result of an earlier version may hold a mark)
        folder.name,
        folder.resolve(),
        Path(os.path.abspath(folder)),
        saved.manifest,
        values,
        groups,
    )


def labelled(columns: list[RunColumn], reserved: Collection[str] = ()) -> list[RunColumn]:
    """Model names as labels, unique, and none of the `reserved` ones (the published columns': a
    table's cells are found by label): where runs share a model name, or one's is reserved, the end
    of each one's folder path as given (a symlink's name, not its target's) that tells it apart from
    the others' (the folder's name, or `two/bm25` for one model of a folder of several models'
    results beside another such folder), control characters written as escapes. One result given
    twice (by any path) is refused: it would be set against itself, under one label."""
    paths = [column.path for column in columns]
    for path in paths:
        if paths.count(path) > 1:
            raise UserError(f"the result {path} is given twice; give each result once")
    names = [column.label for column in columns]
    shared = [column for column in columns if names.count(column.label) > 1 or column.label in reserved]
    taken = {column.label for column in columns if column not in shared} | set(reserved)
    for depth in range(1, max((len(c.shown.parts) for c in shared), default=0) + 1):
        ends = [_printable("/".join(column.shown.parts[-depth:])) for column in shared]
        if len(set(ends)) == len(ends) and not taken & set(ends):
            for column, end in zip(shared, ends, strict=True):
                column.label = end
            return columns
    if shared:  # (only a folder path that is itself reserved, or escapes that meet, come here)
        raise UserError(f"cannot tell the result {shared[0].shown} from the others by its path; rename it")
    return columns


def _printable(text: str) -> str:
    """`text` with each control character and text-direction control as its escape (a label is
    printed to terminals and into tables, where an escape sequence or a line break would act, and
    a direction override would show it in another order)."""
    return NOT_IN_A_NEW_NAME.sub(lambda match: ascii(match.group())[1:-1], text)
