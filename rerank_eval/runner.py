"""The pipeline of one benchmark run: data → first stage → reranking → evaluation → result folder.

Each dataset is prepared once (queries, qrels, candidates, document texts) as a `PreparedDataset`,
then reranked; the reranked order is score descending with ties kept in first-stage order, and the
written scores are made strictly decreasing so that trec_eval's tie-breaking by doc id can never
reorder them.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rerank_eval import __version__
from rerank_eval.config import MAX_TOP_K, BenchmarkConfig, DatasetSpec, SuiteSpec
from rerank_eval.data import IrDataset
from rerank_eval.distributed import ranks
from rerank_eval.errors import UserError
from rerank_eval.evaluation import PerQuery, canonical_measures, evaluate_per_query, parse_measures
from rerank_eval.first_stage import (
    Candidates,
    FirstStageRecord,
    FirstStageRequest,
    RunLocation,
    fetch_first_stage,
    obtain_run,
    select_candidates,
)
from rerank_eval.interrupt import Interrupted, StopRequest, StopRequested
from rerank_eval.journal import JOURNAL_FORMAT, ScoredQuery, ScoreJournal, cache_key, journal_path
from rerank_eval.paths import file_name, special_file_kind
from rerank_eval.progress import step, track
from rerank_eval.rerankers.base import Reranker, RerankRequest
from rerank_eval.results import ResultWriter, package_versions, source_revision
from rerank_eval.runfiles import Run, format_run_lines

TIE_BREAK = "score descending; equal scores keep first-stage order; written scores strictly decreasing"


@dataclass(frozen=True)
class CandidateOrder:
    """The order in which candidates are shown to the model (`first-stage`, `reversed`, `shuffled:SEED`)."""

    kind: str
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> CandidateOrder:
        if text in ("first-stage", "reversed"):
            return cls(text)
        if text.startswith("shuffled:") and text.removeprefix("shuffled:").lstrip("-").isdigit():
            return cls("shuffled", int(text.removeprefix("shuffled:")))
        raise UserError(f"unknown candidate order {text!r}; use first-stage, reversed or shuffled:SEED")

    def __str__(self) -> str:
        return f"shuffled:{self.seed}" if self.kind == "shuffled" else self.kind

    def positions(self, query_id: str, count: int) -> list[int]:
        """First-stage ranks in presentation order; a shuffle depends only on seed and query."""
        order = list(range(count))
        if self.kind == "reversed":
            order.reverse()
        elif self.kind == "shuffled":
            random.Random(f"{self.seed}\0{query_id}").shuffle(order)
        return order


@dataclass
class RunPlan:
    """Everything that decides a run's numbers, fixed before any work starts."""

    config: BenchmarkConfig
    suite: SuiteSpec
    datasets: list[DatasetSpec]
    top_k: int
    metrics: list[str]
    candidate_order: CandidateOrder
    runs: RunLocation = field(default_factory=RunLocation)
    first_stage_override: str | None = None
    fresh: bool = False  # ignore (and replace) journaled scores
    resume_command: str = "the same command"

    def measures(self) -> list[str]:
        """The user's metrics plus the ones every table shows."""
        return canonical_measures([*self.metrics, f"R@{self.top_k}", "Judged@10"])

    def validate(self) -> None:
        """Fail before any download or model load when the plan cannot work."""
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise UserError(f"--top-k must be between 1 and {MAX_TOP_K:,}, got {self.top_k}")
        parse_measures(self.measures())
        if self.first_stage_override:
            self.config.first_stage(self.first_stage_override)
        for key, path in self.runs.overrides.items():
            if key not in {d.key for d in self.datasets}:
                raise UserError(f"--run names dataset {key!r}, which this run does not include")
            kind = special_file_kind(Path(path))
            if kind:
                raise UserError(f"run file for {key} is {kind}, not a file: {path}")
            if not Path(path).is_file():
                raise UserError(f"run file for {key} not found: {path}")
        if self.runs.folder is not None:
            if not self.runs.folder.is_dir():
                raise UserError(f"--runs-dir {self.runs.folder} is not a folder")
            try:
                self.runs.pattern.format(key="k", name="n")
            except (KeyError, IndexError, ValueError, AttributeError):
                raise UserError(
                    f"--run-pattern {self.runs.pattern!r} may use only {{key}} and {{name}}"
                ) from None
        if self.runs.reference is not None:
            supplied = [spec for spec in self.datasets if self.runs.path_for(spec) is not None]
            if not supplied:
                raise UserError(
                    "--run-reference describes run files you pass (--run, --runs-dir); there are none"
                )
            for spec in supplied:
                self.runs.reference_for(spec)


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


def first_stage_request(plan: RunPlan, spec: DatasetSpec, dataset: IrDataset, queries: dict[str, str]):
    """What the dataset's first stage is asked for: depth top-k, plus one where self-matches go."""
    source = plan.config.first_stage(plan.first_stage_override or spec.first_stage)
    depth = plan.top_k + (1 if spec.drop_self_matches else 0)
    return FirstStageRequest(spec, source, dataset, queries, depth)


def fetch_for_ranks(plan: RunPlan, spec: DatasetSpec) -> None:
    """Downloads and single-process builds, done by rank 0 while the other ranks wait; what all
    ranks do together (a dense first stage's corpus encoding) is left to `prepare_dataset`."""
    dataset = IrDataset(spec)
    queries = dataset.queries()
    dataset.qrels()
    dataset.documents([])
    if plan.runs.path_for(spec) is None:
        fetch_first_stage(first_stage_request(plan, spec, dataset, queries), build=False)


def prepare_dataset(plan: RunPlan, spec: DatasetSpec) -> PreparedDataset:
    """Queries, qrels, the top-k candidates and their texts for one dataset."""
    start = time.monotonic()
    dataset = IrDataset(spec)
    with step(f"{spec.key}: queries and judgements"):
        queries = dataset.queries()
        qrels = dataset.qrels()
    if not qrels:
        raise UserError(f"{spec.ir_datasets_id} has no relevance judgements")
    request = first_stage_request(plan, spec, dataset, queries)
    with step(f"{spec.key}: first stage"):
        run, record = obtain_run(request, plan.runs)
        candidates = select_candidates(run, qrels, queries, plan.top_k, spec.drop_self_matches, spec.key)
    wanted = {doc for docs in candidates.by_query.values() for doc, _ in docs}
    with step(f"{spec.key}: {len(wanted):,} candidate documents"):
        texts = dataset.documents(wanted)
    if not texts:  # every candidate would be dropped and every query would score 0
        raise UserError(
            f"none of the {len(wanted):,} candidate documents of the first-stage run for {spec.key} is in "
            f"the corpus of {spec.ir_datasets_id}; is the run for another dataset or corpus version?"
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
        spec, queries, qrels, candidates, texts, record, missing, empty, time.monotonic() - start
    )


def warn(message: str) -> None:
    """A condition that changes no number silently: one line on stderr, a count in the manifest."""
    print(f"warning: {message}", file=sys.stderr)


def _warn_about_scoring(key: str, outcome: RerankOutcome, stats: dict[str, Any]) -> None:
    if outcome.ties:
        warn(f"{outcome.ties} reranked scores of {key} tie with the one ranked above; first-stage order kept")
    if stats.get("truncated_documents"):
        warn(f"{stats['truncated_documents']} documents of {key} were cut to the model's length limit")


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
            "dataset": prepared.spec.ir_datasets_id,
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


def _out_of_memory_error() -> type[BaseException]:
    import torch

    return getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def score_with_backoff(
    reranker: Reranker, requests: list[RerankRequest], prepared: Any = None
) -> list[np.ndarray]:
    """Score a batch; on out-of-memory, free the cache, shrink the batches and retry."""
    out_of_memory = _out_of_memory_error()
    prepared = reranker.prepare(requests) if prepared is None else prepared
    while True:
        try:
            return reranker.score_prepared(prepared)
        except out_of_memory:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if not reranker.shrink_batch_budget():
                raise UserError(reranker.out_of_memory_message(requests)) from None


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
    reranker.begin_dataset(prepared.spec)
    shard = ranks()
    key = journal_key(plan, prepared, reranker)
    journal = ScoreJournal(journal_path(prepared.spec.key, key, shard.rank, shard.world))
    if plan.fresh:
        journal.discard()
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
    reranker.forward_hook = stop.raise_if_requested
    try:
        # Closed explicitly, so an interrupt joins the background thread and ends the progress display.
        with (
            closing(prepared_ahead(reranker, pending)) as batches,
            closing(
                track(batches, pending_queries, f"reranking {prepared.spec.key}", size=lambda b: len(b[0]))
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
            f"interrupted; {len(scored)} of {len(expected)} queries of {prepared.spec.key} are "
            f"journaled; run the same command again to resume: {plan.resume_command}",
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
    reranked: Run = {}
    ties = 0
    for query_id, docs in expected.items():
        ranking, written, tied = strictly_decreasing(scored[query_id].scores)
        reranked[query_id] = {docs[i]: value for i, value in zip(ranking, written)}
        ties += tied
    notes = {query_id: scored[query_id].notes for query_id in expected if scored[query_id].notes}
    return RerankOutcome(reranked, ties, pending_queries, resumed, notes)


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


def run_lines(run: Run, tag: str) -> list[str]:
    lines: list[str] = []
    for query_id, docs in run.items():
        lines += format_run_lines(query_id, docs.items(), tag)
    return lines


def _dataset_record(
    prepared: PreparedDataset, outcome: RerankOutcome, timings: dict[str, Any], reranker: Reranker
) -> dict[str, Any]:
    spec = prepared.spec
    return {
        "key": spec.key,
        "row": spec.row,
        "ir_datasets_id": spec.ir_datasets_id,
        "language": spec.language,
        "in_average": spec.in_average,
        "drop_self_matches": spec.drop_self_matches,
        "first_stage": prepared.first_stage.to_json(),
        "coverage": prepared.candidates.coverage(),
        "missing_documents": prepared.missing_documents,
        "empty_documents": prepared.empty_documents,
        "tied_scores": outcome.ties,
        **_block_split_summary(outcome),
        "model_settings": reranker.score_identity().get("settings", {}),
        # Everything below may differ between an uninterrupted and a resumed run.
        "timings": {
            **timings,
            "scored_queries": outcome.scored_queries,
            "resumed_queries": outcome.resumed_queries,
        },
    }


def _block_split_summary(outcome: RerankOutcome) -> dict[str, Any]:
    """For a listwise model: how many queries were scored in 1, 2, ... blocks."""
    counts = Counter(len(notes["blocks"]) for notes in outcome.notes.values() if "blocks" in notes)
    return {"queries_by_block_count": {str(n): counts[n] for n in sorted(counts)}} if counts else {}


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


def execute(
    plan: RunPlan,
    reranker: Reranker,
    out: Path,
    command: list[str],
    datasets: DatasetCache | None = None,
    keep_identical: bool = False,
) -> Path | None:
    """Run the plan with one reranker and publish the result folder at `out` (on rank 0 only)."""
    plan.validate()
    datasets = datasets or DatasetCache(plan)
    started = datetime.now(timezone.utc)
    main = ranks().is_main
    writer = ResultWriter(out, keep_identical) if main else None
    records = []
    tag = (reranker.name or reranker.family).replace("/", "_").replace(" ", "_")
    stop = StopRequest()
    try:
        with stop:
            for spec in plan.datasets:
                if stop.requested:  # asked during the previous dataset's last forward pass
                    raise Interrupted(
                        f"interrupted before {spec.key}; scores journaled so far are kept; to resume: "
                        f"{plan.resume_command}",
                        stop.signum,
                    )
                with stop.preparing():
                    prepared = datasets.prepared(spec)
                start = time.monotonic()
                outcome = rerank_dataset(reranker, prepared, plan, stop)
                rerank_seconds = time.monotonic() - start
                _warn_about_scoring(spec.key, outcome, reranker.runtime_stats())
                if writer is None:
                    continue  # ranks other than 0 only score
                start = time.monotonic()
                with step(f"{spec.key}: evaluation"):
                    first_values = datasets.first_stage_values(prepared)
                    reranked_values = evaluate_per_query(prepared.qrels, outcome.run, plan.measures())
                writer.add_run(spec.key, run_lines(outcome.run, tag))
                # the candidates as the first stage scored them (after self-matches and the top-k cut)
                first_stage_tag = (prepared.first_stage.name or prepared.first_stage.kind).replace(" ", "_")
                writer.add_run(
                    f"{spec.key}.first-stage", run_lines(prepared.candidates.to_run(), first_stage_tag)
                )
                blocks = {q: notes["blocks"] for q, notes in outcome.notes.items() if "blocks" in notes}
                if blocks:
                    writer.add_blocks(spec.key, blocks)
                writer.add_values(spec.key, "first_stage", first_values)
                writer.add_values(spec.key, "reranked", reranked_values)
                timings = {
                    "prepare_seconds": round(prepared.seconds, 3),
                    "rerank_seconds": round(rerank_seconds, 3),
                    "evaluate_seconds": round(time.monotonic() - start, 3),
                    "execution": reranker.runtime_stats(),
                }
                records.append(_dataset_record(prepared, outcome, timings, reranker))
        if writer is None:
            return None
        finished = datetime.now(timezone.utc)
        manifest = build_manifest(plan, reranker, records, command, started, finished)
        folder = writer.publish(manifest)
        if writer.kept_existing:
            print(f"{out}: the same results as the folder already there, which is kept", file=sys.stderr)
        return folder
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, KeyboardInterrupt):  # a second Ctrl-C, or one while loading
            raise Interrupted(
                f"stopped at once; scores journaled so far are kept; to resume: {plan.resume_command}",
                stop.signum,
            ) from None
        raise


def model_folder_name(model: str) -> str:
    """A folder name for a model given by preset, Hub id or path (never one that leaves `--out`)."""
    path = Path(model.rstrip("/"))
    return file_name(path.name if path.exists() else model)


def execute_models(
    plan: RunPlan, models: list[str], load: Callable[[str], Reranker], out: Path, command: list[str]
) -> list[Path]:
    """Rerank the same candidates with each model in turn (data loaded once, one model in memory).

    One model publishes `out`; several publish `out/<model>/` each. Under torchrun only rank 0
    publishes, and the other ranks return no folder.
    """
    plan.validate()
    names = [model_folder_name(m) for m in models]
    if len(set(names)) != len(names):
        raise UserError(f"--model names two models with the same folder name: {', '.join(models)}")
    datasets = DatasetCache(plan)
    folders = []
    for model, name in zip(models, names):
        destination = out if len(models) == 1 else out / name
        # A resumed several-model run redoes the models it had published, from the journal (no
        # scoring), and keeps their folders when the results come out identical.
        resumed = len(models) > 1 and _published_by_this_command(destination, command, plan)
        reranker = load(model)
        folder = execute(plan, reranker, destination, command, datasets, keep_identical=resumed)
        folders += [folder] if folder else []
        del reranker
        _free_accelerator_memory()
    return folders


def _published_by_this_command(folder: Path, command: list[str], plan: RunPlan) -> bool:
    """Whether an earlier run of this very command line published this model's folder (a hint
    only: the folder is kept only if the results come out identical)."""
    if plan.fresh or not (folder / "manifest.json").is_file():
        return False
    try:
        earlier = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("command", [])
    except (OSError, ValueError):
        return False
    return [a for a in earlier[1:] if a != "--fresh"] == list(command[1:])


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_manifest(
    plan: RunPlan,
    reranker: Reranker,
    datasets: list[dict[str, Any]],
    command: list[str],
    started: datetime,
    finished: datetime,
) -> dict[str, Any]:
    return {
        "format": 1,
        "complete": True,
        "rerank_eval": {"version": __version__, "git": source_revision()},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 3),
        "suite": {
            "name": plan.suite.name,
            "config": str(plan.config.path),
            # what the file said, so that the result explains itself once the file is edited
            "config_sha256": plan.config.sha256,
            "entries": [asdict(spec) for spec in plan.datasets],
            "first_stages": {
                name: asdict(plan.config.first_stage(name))
                for name in sorted({plan.first_stage_override or d.first_stage for d in plan.datasets})
            },
            "average_label": plan.suite.average_label,
            "average_rows": sorted({d.row for d in plan.suite.datasets if d.in_average}),
        },
        "model": {
            "name": reranker.name,
            **reranker.describe(),
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
            "ranking": TIE_BREAK,
            "evaluation": "ir_measures per query; judged queries without candidates score 0",
        },
        "datasets": datasets,
    }
