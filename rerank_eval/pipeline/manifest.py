"""The manifest of a result folder: what was run, on what, with which protocol and versions."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rerank_eval import __version__
from rerank_eval.pipeline.plan import RunPlan
from rerank_eval.pipeline.prepare import PreparedDataset
from rerank_eval.pipeline.score import RerankOutcome
from rerank_eval.rerankers.base import Reranker
from rerank_eval.results.manifest import format_for
from rerank_eval.results.provenance import package_versions, source_revision

TIE_BREAK = "score descending; equal scores keep first-stage order; written scores strictly decreasing"


def dataset_record(
    prepared: PreparedDataset, outcome: RerankOutcome, timings: dict[str, Any], reranker: Reranker
) -> dict[str, Any]:
    spec = prepared.spec
    return {
        "key": spec.key,
        "row": spec.row,
        "ir_datasets_id": spec.ir_datasets_id,
        **prepared.source,
        "language": spec.language,
        "in_average": spec.in_average,
        "drop_self_matches": spec.drop_self_matches,
        "first_stage": prepared.first_stage.to_json(),
        "candidates_sha256": prepared.candidates.sha256(),
        "coverage": prepared.candidates.coverage(),
        "missing_documents": prepared.missing_documents,
        "empty_documents": prepared.empty_documents,
        "tied_scores": outcome.ties,
        **_block_split_summary(outcome),
        "model_settings": reranker.score_identity().get("settings", {}),
        # Everything below may differ between an uninterrupted and a resumed run.
        # (under torchrun `timings` carries every rank's: the queries scored in all, and per rank)
        "timings": {
            "scored_queries": outcome.scored_queries,
            "resumed_queries": outcome.resumed_queries,
            **timings,
        },
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _block_split_summary(outcome: RerankOutcome) -> dict[str, Any]:
    """For a listwise model: how many queries were scored in 1, 2, ... blocks."""
    counts = Counter(len(notes["blocks"]) for notes in outcome.notes.values() if "blocks" in notes)
    return {"queries_by_block_count": {str(n): counts[n] for n in sorted(counts)}} if counts else {}


def config_files_record(plan: RunPlan) -> list[dict[str, str]]:
    """The config files a run read, as its manifest records them (each path and SHA-256)."""
    return [{"path": str(f.path), "sha256": f.sha256} for f in plan.config.files]


def build_manifest(
    plan: RunPlan,
    reranker: Reranker,
    datasets: list[dict[str, Any]],
    command: list[str],
    started: datetime,
    finished: datetime,
    position: int | None = None,
) -> dict[str, Any]:
    return {
        "format": format_for(datasets),
        "complete": True,
        "rerank_eval": {"version": __version__, "git": source_revision()},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        # CPU matrix products split their sums by thread, so float32 scores on a CPU follow the count
        "torch_threads": _torch_threads(),
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 3),
        "suite": {
            "name": plan.suite.name,
            "config": str(plan.config.path),
            # what the files said, so that the result explains itself once a file is edited: the
            # user's file is merged over the packaged one, and the entries are the merged result
            "config_sha256": plan.config.sha256,
            "config_files": config_files_record(plan),
            "entries": [asdict(spec) for spec in plan.datasets],
            # the entries that ran: a fallback where it replaced one, with the command line's settings
            "first_stages": {
                used.name: asdict(used)
                for used in sorted(
                    (plan.first_stage_of(d) for d in plan.datasets if plan.runs.path_for(d) is None),
                    key=lambda used: used.name,
                )
            },
            "average_label": plan.suite.average_label,
            "average_rows": sorted(plan.suite.average_rows()),
            "groups": plan.suite.groups(),
            "keys": [spec.key for spec in plan.suite.datasets],
        },
        "model": {
            "name": reranker.name,
            # its place among the models of a run of several: their tables keep the run's order
            **({"position": position} if position is not None else {}),
            **reranker.describe(),
            # what of a preset's procedure its own published code does not settle (v3.5's)
            **_unverified(plan, reranker.name),
            # scores are computed per fixed chunk, batched as configured (see query_chunks)
            "queries_per_chunk": reranker.queries_per_call,
            "batching": reranker.batching(),
        },
        "protocol": {
            "top_k": plan.top_k,
            "metrics": plan.metrics,
            "measures": plan.measures(),
            "candidate_order": str(plan.candidate_order),
            "first_stage_override": plan.first_stage_override,
            "first_stage_settings": plan.first_stage_settings,
            "ranking": TIE_BREAK,
            "evaluation": "ir_measures per query; judged queries without candidates score 0",
        },
        "datasets": datasets,
    }


def _unverified(plan: RunPlan, name: str | None) -> dict[str, str]:
    preset = plan.config.models.get(name or "")
    return {"unverified": preset.unverified} if preset is not None and preset.unverified else {}
