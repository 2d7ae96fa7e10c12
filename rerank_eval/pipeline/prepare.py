"""Each dataset prepared once (queries, qrels, the top-k candidates, their texts) as a
`PreparedDataset`, shared by every model of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rerank_eval.config.schema import DatasetSpec
from rerank_eval.datasets import open_dataset
from rerank_eval.datasets.ir_dataset import IrDataset
from rerank_eval.errors import UserError, warn
from rerank_eval.evaluation.measures import PerQuery, evaluate_per_query
from rerank_eval.first_stage import (
    Candidates,
    FirstStageRecord,
    FirstStageRequest,
    fetch_first_stage,
    obtain_run,
)
from rerank_eval.pipeline.plan import RunPlan
from rerank_eval.runtime.distributed import ranks
from rerank_eval.runtime.progress import step


@dataclass
class PreparedDataset:
    spec: DatasetSpec
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    candidates: Candidates
    texts: dict[str, str]
    first_stage: FirstStageRecord
    missing_documents: int
    empty_documents: int
    seconds: float
    #: what the scores depend on in the dataset itself (its id, or its files' hashes)
    identity: str
    #: what the manifest records of where the dataset came from beyond its entry
    source: dict


def first_stage_request(plan: RunPlan, spec: DatasetSpec, dataset: IrDataset, queries: dict[str, str]):
    """What the dataset's first stage is asked for: as deep as its candidate policy needs (no
    source where the user's run file is the first stage)."""
    supplied = plan.runs.path_for(spec) is not None
    source = None if supplied else plan.first_stage_of(spec)
    return FirstStageRequest(spec, source, dataset, queries, plan.candidate_policy(spec).depth)


def fetch_for_ranks(plan: RunPlan, spec: DatasetSpec) -> None:
    """Downloads and single-process builds, done by rank 0 while the other ranks wait; what all
    ranks do together (a dense first stage's corpus encoding) is left to `prepare_dataset`."""
    dataset = open_dataset(spec)
    queries = dataset.queries()
    dataset.qrels()
    dataset.documents([])
    if plan.runs.path_for(spec) is None:
        fetch_first_stage(first_stage_request(plan, spec, dataset, queries), build=False)


def prepare_dataset(plan: RunPlan, spec: DatasetSpec) -> PreparedDataset:
    """Queries, qrels, the top-k candidates and their texts for one dataset."""
    start = time.monotonic()
    dataset = open_dataset(spec)
    with step(f"{spec.key}: queries and judgements"):
        queries = dataset.queries()
        qrels = dataset.qrels()
    if not qrels:
        raise UserError(f"{spec.origin} has no relevance judgements")
    request = first_stage_request(plan, spec, dataset, queries)
    with step(f"{spec.key}: first stage"):
        run, record = obtain_run(request, plan.runs)
        if request.source is not None:
            record.fallback_from = plan.fell_back_from(spec, record.name)
        candidates = plan.candidate_policy(spec).select(run, qrels, queries, spec.key)
    wanted = {doc for docs in candidates.by_query.values() for doc, _ in docs}
    with step(f"{spec.key}: {len(wanted):,} candidate documents"):
        texts = dataset.documents(wanted)
    if not texts:  # every candidate would be dropped and every query would score 0
        raise UserError(
            f"none of the {len(wanted):,} candidate documents of the first-stage run for {spec.key} is in "
            f"the corpus of {spec.origin}; is the run for another dataset or corpus version?"
        )
    missing = len(wanted - set(texts))
    if missing:
        warn(f"{missing} candidate document ids of {spec.key} are not in its corpus; they are left out")
        for query_id, docs in candidates.by_query.items():
            candidates.by_query[query_id] = [(d, s) for d, s in docs if d in texts]
    if record.duplicate_lines:
        warn(
            f"{record.duplicate_lines} duplicate (query, document) lines in the first-stage run of "
            f"{spec.key}; the first of each is kept"
        )
    if candidates.run_queries_without_judgements:
        warn(
            f"{candidates.run_queries_without_judgements} queries of the first-stage run of {spec.key} "
            f"have no judgements (or are not queries of it); they are ignored, as trec_eval does"
        )
    empty = sum(1 for text in texts.values() if not text.strip())
    if empty:
        warn(f"{empty} candidate documents of {spec.key} are empty or whitespace only; reranked as they are")
    if candidates.queries_with_equal_scores:
        warn(
            f"in {candidates.queries_with_equal_scores} queries of {spec.key} all first-stage scores are "
            f"equal; their first-stage order is by doc id only (trec_eval's rule)"
        )
    return PreparedDataset(
        spec, queries, qrels, candidates, texts, record, missing, empty, time.monotonic() - start,
        dataset.identity(), dataset.record(),
    )  # fmt: skip


class DatasetCache:
    """Datasets prepared once and shared by every model of a run (with their first-stage values)."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self._prepared: dict[str, PreparedDataset] = {}
        self._first_stage_values: dict[str, PerQuery] = {}

    def prepared(self, spec: DatasetSpec) -> PreparedDataset:
        """Loaded once; under torchrun rank 0 downloads and builds first, then every rank prepares
        (together, where the first stage shares its work across ranks)."""
        if spec.key not in self._prepared:
            shard = ranks()
            if shard.world > 1:
                if not shard.is_main:
                    shard.barrier()
                else:
                    fetch_for_ranks(self.plan, spec)
                    shard.barrier()
            self._prepared[spec.key] = prepare_dataset(self.plan, spec)
        return self._prepared[spec.key]

    def first_stage_values(self, prepared: PreparedDataset) -> PerQuery:
        key = prepared.spec.key
        if key not in self._first_stage_values:
            run = prepared.candidates.to_run()
            self._first_stage_values[key] = evaluate_per_query(prepared.qrels, run, self.plan.measures())
        return self._first_stage_values[key]
