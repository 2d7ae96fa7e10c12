"""The fair-comparison guard: two runs compare only when their protocols agree.

Every field that changes which candidates a model saw, or which queries are judged, is checked;
`--force` compares anyway, and the comparison's caption then says what differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rerank_eval.reporting.compare.columns import RunColumn, labelled, run_column
from rerank_eval.results.folder import SavedResult
from rerank_eval.results.manifest import DatasetRecord


def _first_stage_identity(record: DatasetRecord) -> tuple:
    stage = record.first_stage
    return stage.kind, stage.sha256, json.dumps(stage.settings, sort_keys=True)


def _candidates_check(
    mine: DatasetRecord, theirs: DatasetRecord
) -> tuple[str, Callable[[DatasetRecord], Any]]:
    """(reason, what must agree): the candidates themselves where both results record them (a
    reused run file is its source's candidates, a copied encoder folder gives the same run); where
    one was written before that, the first stage's kind, file and settings."""
    if mine.candidates_sha256 and theirs.candidates_sha256:
        return "candidates of {key} differ", lambda record: record.candidates_sha256
    return "first stage of {key} differs", _first_stage_identity


def _dataset_identity(record: DatasetRecord) -> tuple:
    """The ir_datasets id, or the local files' contents (not where they lie)."""
    files = record.local_files or {}
    hashes = {str(role): f.get("sha256") if isinstance(f, dict) else f for role, f in files.items()}
    return record.ir_datasets_id, json.dumps(hashes, sort_keys=True, default=str)


def protocol_differences(baseline: RunColumn, other: RunColumn) -> list[str]:
    """Reasons two runs are not a fair comparison (empty when they are)."""
    reasons = []
    a, b = baseline.manifest, other.manifest
    if a.protocol.top_k != b.protocol.top_k:
        reasons.append(
            f"top-k differs ({baseline.label}: {a.protocol.top_k}, {other.label}: {b.protocol.top_k})"
        )
    order_a, order_b = a.protocol.candidate_order, b.protocol.candidate_order
    if order_a != order_b:  # causal listwise models score a different prompt
        reasons.append(f"candidate order differs ({baseline.label}: {order_a}, {other.label}: {order_b})")
    theirs = {d.key: d for d in b.datasets}
    for mine in a.datasets:
        key = mine.key
        if key not in theirs:
            continue
        for reason, get in (
            ("dataset version of {key} differs", _dataset_identity),
            _candidates_check(mine, theirs[key]),
            ("self-match policy of {key} differs", lambda record: record.drop_self_matches),
        ):
            if get(mine) != get(theirs[key]):
                reasons.append(f"{reason.format(key=key)} between {baseline.label} and {other.label}")
        if key in baseline.values and key in other.values:  # (a dataset without judged queries has none)
            unmatched = set(baseline.values[key].index) ^ set(other.values[key].index)
            if unmatched:  # every judged query has a value, so the judgements themselves differ
                reasons.append(
                    f"query sets of {key} differ between {baseline.label} and {other.label} "
                    f"({len(unmatched)} quer{'y' if len(unmatched) == 1 else 'ies'} in only one of them)"
                )
    return reasons


def one_table_problem(results: list[SavedResult]) -> str | None:
    """Why several models' results cannot be one table (None when they can): one table sets each
    model beside a single first stage column, so they must hold the same datasets and have
    reranked the same candidates for the same judged queries, as a several-model run writes them;
    a folder assembled by hand may not (`compare --force` sets such results side by side, saying
    what differs)."""
    runs = labelled([run_column(saved, saved.manifest.protocol.metrics[0]) for saved in results])
    first = runs[0]
    keys = [record.key for record in first.manifest.datasets]
    for run in runs[1:]:
        other = [record.key for record in run.manifest.datasets]
        if other != keys:
            return f"datasets differ ({first.label}: {', '.join(keys)}; {run.label}: {', '.join(other)})"
        reasons = protocol_differences(first, run)
        if reasons:
            return reasons[0]
    return None
