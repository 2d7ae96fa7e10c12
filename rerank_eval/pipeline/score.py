"""Reranking one dataset: fixed chunks of queries, journaled as they are scored, the ranking rule.

The reranked order is score descending with ties kept in first-stage order, and the written scores
are made strictly decreasing so that trec_eval's tie-breaking by doc id can never reorder them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rerank_eval.cache import cache_key
from rerank_eval.errors import UserError
from rerank_eval.pipeline.interrupt import Interrupted, StopRequest, StopRequested
from rerank_eval.pipeline.journal import JOURNAL_FORMAT, ScoredQuery, ScoreJournal, journal_path
from rerank_eval.pipeline.plan import CandidateOrder, RunPlan
from rerank_eval.pipeline.prepare import PreparedDataset
from rerank_eval.rerankers import registry
from rerank_eval.rerankers.base import DatasetContext, Reranker, RerankRequest
from rerank_eval.runfiles import Run
from rerank_eval.runtime.distributed import Ranks, ranks
from rerank_eval.runtime.progress import track


def strictly_decreasing(scores: np.ndarray) -> tuple[list[int], list[float], int]:
    """Ranking (indices in first-stage order) and written scores; equal scores keep input order.

    Each tied score after the first is lowered to the next representable double below the
    previous one, so the written run is strictly decreasing and ranks exactly as computed.
    Returns the order, the scores to write, and how many candidates were tied.
    """
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    written: list[float] = []
    ties = 0
    for index in order:
        value = float(scores[index])
        if written and value >= written[-1]:
            ties += 1
            value = math.nextafter(written[-1], -math.inf)
        written.append(value)
    return order, written, ties


def _requests(prepared: PreparedDataset, order: CandidateOrder) -> list[RerankRequest]:
    requests = []
    for query_id, docs in prepared.candidates.by_query.items():
        if not docs:
            continue
        shown = order.positions(query_id, len(docs))
        requests.append(
            RerankRequest(
                query_id=query_id,
                query=prepared.queries[query_id],
                doc_ids=tuple(docs[i][0] for i in shown),
                texts=tuple(prepared.texts[docs[i][0]] for i in shown),
                first_stage_ranks=tuple(shown),
                first_stage_scores=tuple(docs[i][1] for i in shown),
            )
        )
    return requests


def query_chunks(requests: list[RerankRequest], size: int) -> list[list[RerankRequest]]:
    """The dataset's queries in fixed chunks of `size`, in candidate order: every score is computed
    within its chunk, so a resumed run (or one with another number of ranks) scores each query in
    exactly the batch an uninterrupted single-process run does, and float rounding agrees."""
    return [requests[start : start + size] for start in range(0, len(requests), size)]


@dataclass
class RerankOutcome:
    run: Run
    ties: int
    scored_queries: int
    resumed_queries: int
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)  # query id -> notes


def journal_key(plan: RunPlan, prepared: PreparedDataset, reranker: Reranker) -> str:
    """Everything that changes this dataset's scores, and nothing else (not the output folder)."""
    first_stage = prepared.first_stage
    return cache_key(
        {
            "journal_format": JOURNAL_FORMAT,
            "model": reranker.score_identity(),
            "dataset": prepared.identity,
            "first_stage": {
                "kind": first_stage.kind,
                "sha256": first_stage.sha256,
                "settings": first_stage.settings,
            },
            "top_k": plan.top_k,
            "drop_self_matches": prepared.spec.drop_self_matches,
            "candidate_order": str(plan.candidate_order),
            "chunking": {"queries_per_chunk": reranker.queries_per_call, "order": "candidate order"},
            "batching": reranker.batching(),
        }
    )


def score_with_backoff(
    reranker: Reranker, requests: list[RerankRequest], prepared: Any = None
) -> list[np.ndarray]:
    """Score a batch; on out-of-memory, free the cache, shrink the batches and retry."""
    from rerank_eval.models.common import OUT_OF_MEMORY, release_cached_memory

    prepared = reranker.prepare(requests) if prepared is None else prepared
    while True:
        try:
            return reranker.score_prepared(prepared)
        except OUT_OF_MEMORY:
            release_cached_memory()
            if not reranker.shrink_batch_budget():
                raise reranker.out_of_memory_error(requests) from None


def prepared_ahead(reranker: Reranker, chunks: list[list[RerankRequest]]) -> Iterator[tuple[list, Any]]:
    """(chunk, prepared chunk) pairs, preparing the next chunk in a background thread meanwhile."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(reranker.prepare, chunks[0]) if chunks else None
        for index, chunk in enumerate(chunks):
            prepared = pending.result()
            if index + 1 < len(chunks):
                pending = pool.submit(reranker.prepare, chunks[index + 1])
            yield chunk, prepared


def rerank_dataset(
    reranker: Reranker, prepared: PreparedDataset, plan: RunPlan, stop: StopRequest
) -> RerankOutcome:
    """The reranked run of one dataset, resuming from and appending to its score journal.

    Queries are scored in fixed chunks (`query_chunks`); a chunk is skipped only when every query
    of it is journaled, and one cut short is scored again whole, so every score comes from the
    same batch as in an uninterrupted run.
    """
    expected = {q: [d for d, _ in docs] for q, docs in prepared.candidates.by_query.items() if docs}
    reranker.begin_dataset(DatasetContext(prepared.spec.key, dict(prepared.spec.instructions)))
    shard = ranks()
    key = journal_key(plan, prepared, reranker)
    journal = ScoreJournal(journal_path(prepared.spec.key, key, shard.rank, shard.world))
    if plan.fresh:
        journal.discard()
        if shard.is_main:
            journal.discard_other_process_counts(shard.world)
    scored = journal.load(expected, siblings=not plan.fresh)
    chunks = query_chunks(_requests(prepared, plan.candidate_order), max(1, reranker.queries_per_call))
    pending = [
        chunk
        for position, chunk in enumerate(chunks)
        if shard.owns(position) and any(r.query_id not in scored for r in chunk)
    ]
    resumed = sum(len(chunk) for chunk in chunks if all(r.query_id in scored for r in chunk))
    if resumed:
        print(
            f"{prepared.spec.key}: {resumed} of {len(expected)} queries already scored (journal)",
            file=sys.stderr,
        )
    pending_queries = sum(len(chunk) for chunk in pending)
    # (the bm25 and first-stage presets score nothing: their progress says what they do)
    scores = registry.family(reranker.family).needs_model
    doing = "reranking" if scores else "keeping the first-stage order of"
    reranker.forward_hook = stop.raise_if_requested
    try:
        # Closed explicitly, so an interrupt joins the background thread and ends the progress display.
        with (
            closing(prepared_ahead(reranker, pending)) as batches,
            closing(
                track(batches, pending_queries, f"{doing} {prepared.spec.key}", size=lambda b: len(b[0]))
            ) as tracked,
        ):
            for chunk, ready in tracked:
                stop.raise_if_requested()
                reranker.restore_batch_budget()
                entries = _scored_chunk(reranker, chunk, ready, expected, prepared.spec.key)
                journal.append(entries)
                scored.update({query_id: value for query_id, _, value in entries})
    except StopRequested:  # the chunk in progress is abandoned, not journaled
        raise Interrupted(
            f"interrupted; {_journaled(shard, chunks, scored, prepared.spec.key)} are journaled; "
            f"run the same command again to resume: {plan.resume_command}",
            stop.signum,
        ) from None
    finally:
        reranker.forward_hook = None
        reranker.restore_batch_budget()  # the manifest records the configured budget
        journal.close()
    shard.barrier()
    if shard.world > 1:  # every rank's scores, from every rank's journal
        if not shard.is_main:
            return RerankOutcome({}, 0, pending_queries, resumed)
        scored = journal.load(expected)
        missing = len(set(expected) - set(scored))
        if missing:
            raise UserError(
                f"{missing} queries of {prepared.spec.key} have no scores in the ranks' journals; "
                f"run the same command again to score them"
            )
    reranked, ties = _ranked(expected, scored)
    notes = {query_id: scored[query_id].notes for query_id in expected if scored[query_id].notes}
    return RerankOutcome(reranked, ties, pending_queries, resumed, notes)


def _ranked(expected: dict[str, list[str]], scored: dict[str, Any]) -> tuple[Run, int]:
    """Each query's candidates with their scores made strictly decreasing (`strictly_decreasing`:
    ir_measures would order ties by document id), and how many ties that broke."""
    reranked: Run = {}
    ties = 0
    for query_id, docs in expected.items():
        ranking, written, tied = strictly_decreasing(scored[query_id].scores)
        reranked[query_id] = {docs[i]: value for i, value in zip(ranking, written)}
        ties += tied
    return reranked, ties


def _journaled(shard: Ranks, chunks: list[list[RerankRequest]], scored: dict, key: str) -> str:
    """How many queries are journaled, as this process knows: all of them in one process; under
    torchrun, those of this rank's own share (the others' journals are theirs to count)."""
    owned = [chunk for position, chunk in enumerate(chunks) if shard.owns(position)]
    done = sum(len(chunk) for chunk in owned if all(request.query_id in scored for request in chunk))
    total = sum(len(chunk) for chunk in owned)
    if shard.world == 1:
        return f"{done} of {total} queries of {key}"
    return f"{done} of the {total} queries of {key} in rank {shard.rank}'s share"


def _scored_chunk(
    reranker: Reranker, chunk: list[RerankRequest], ready: Any, expected: dict[str, list[str]], key: str
) -> list[tuple[str, list[str], ScoredQuery]]:
    """Journal entries of one chunk: scores back in first-stage order, with the family's notes."""
    entries = []
    for request, presented in zip(chunk, score_with_backoff(reranker, chunk, ready)):
        # Back to first-stage order, so ties resolve by first-stage rank.
        by_rank = np.empty(len(presented), dtype=np.float64)
        by_rank[list(request.first_stage_ranks)] = presented
        if not np.isfinite(by_rank).all():  # a NaN would rank silently as first-stage order
            raise UserError(
                f"{reranker.name or reranker.family} gave a score that is not a finite number "
                f"for query {request.query_id} of {key}; its batch is not kept"
            )
        notes = reranker.notes(request)
        entries.append((request.query_id, expected[request.query_id], ScoredQuery(by_rank, notes)))
    return entries
