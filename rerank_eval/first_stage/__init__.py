"""First stages: where each dataset's candidates come from.

A user's run file wins; otherwise the dataset's configured source (or `--first-stage`) is obtained
through its kind: `hub` (published runs), `bm25s` (built-in BM25), `lucene` (Lucene's BM25 through
Pyserini) or `dense` (an encoder and exact search over the whole corpus). Whatever the source,
candidates are then cut the same way (`CandidatePolicy`: self-matches, the top-k, and how deep a
first stage retrieves for them), and the record of what was used goes into the manifest.
"""

from __future__ import annotations

from rerank_eval.first_stage import bm25s, dense, hub_run, lucene  # noqa: F401  (each registers its kind)
from rerank_eval.first_stage.base import FirstStageRecord, FirstStageRequest, RunLocation
from rerank_eval.first_stage.candidates import CandidatePolicy, Candidates
from rerank_eval.first_stage.registry import kind, kind_names, resolve, with_settings
from rerank_eval.first_stage.run_file import read_user_run
from rerank_eval.runfiles import Run


def obtain_run(request: FirstStageRequest, location: RunLocation) -> tuple[Run, FirstStageRecord]:
    """The full first-stage run for a dataset and a record of where it came from."""
    user_path = location.path_for(request.spec)
    if user_path is not None:
        return read_user_run(user_path, location, request.spec)
    run, record = kind(request.source.kind).obtain(request)
    record.name = request.source.name
    return run, record


def fetch_first_stage(request: FirstStageRequest, build: bool = True) -> None:
    """Fill the caches `obtain_run` reads; `build=False` leaves out work that several ranks share."""
    kind(request.source.kind).fetch(request, build)


__all__ = [
    "CandidatePolicy",
    "Candidates",
    "FirstStageRecord",
    "FirstStageRequest",
    "RunLocation",
    "fetch_first_stage",
    "kind",
    "kind_names",
    "obtain_run",
    "resolve",
    "with_settings",
]
