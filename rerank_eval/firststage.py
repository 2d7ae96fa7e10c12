"""First-stage candidates: a user's run file, a published BM25 run from the Hub, or built-in BM25.

Whatever the source, candidates are cut the same way: each judged query's documents in trec_eval
order, self-matches dropped where the dataset calls for it, then the top-k. The record of what was
used (source, file hash, coverage) goes into the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rerank_eval.bm25 import Bm25Index, Bm25Settings
from rerank_eval.config import DatasetSpec, FirstStageSpec
from rerank_eval.data import IrDataset
from rerank_eval.errors import UserError
from rerank_eval.hub import hub_file
from rerank_eval.runfiles import Run, read_run, trec_order


@dataclass(frozen=True)
class RunLocation:
    """Where the user said a dataset's run file is (`--run KEY=PATH` or a folder and pattern)."""

    overrides: dict[str, Path] = field(default_factory=dict)
    folder: Path | None = None
    pattern: str = "{key}.trec"
    # The published first stage the user's files reproduce (`--run-reference`), e.g. pyserini-bm25:
    # its per-dataset nDCG@10 from the config is then checked against the files' own.
    reference: str | None = None

    def reference_for(self, spec: DatasetSpec) -> float | None:
        if self.reference is None:
            return None
        if self.reference not in spec.reference:
            known = ", ".join(sorted(spec.reference)) or "none"
            raise UserError(
                f"--run-reference {self.reference}: the config has no such published figure for "
                f"{spec.key} (it has: {known})"
            )
        return spec.reference[self.reference]

    def path_for(self, spec: DatasetSpec) -> Path | None:
        if spec.key in self.overrides:
            return self.overrides[spec.key]
        if self.folder is not None:
            name = self.pattern.format(key=spec.key, name=spec.run_name or spec.key)
            return self.folder / name
        return None


@dataclass
class FirstStageRecord:
    """What produced a dataset's candidates; stored in the manifest."""

    kind: str  # "run-file", "hub", "bm25s"
    label: str
    path: str | None = None
    sha256: str | None = None
    repo: str | None = None
    revision: str | None = None  # the Hub commit the run file was taken from
    settings: dict[str, object] | None = None
    reference_name: str | None = None
    reference_ndcg10: float | None = None
    duplicate_lines: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def obtain_run(
    spec: DatasetSpec,
    source: FirstStageSpec,
    location: RunLocation,
    dataset: IrDataset,
    queries: dict[str, str],
    depth: int,
) -> tuple[Run, FirstStageRecord]:
    """The full first-stage run for a dataset and a record of where it came from."""
    user_path = location.path_for(spec)
    if user_path is not None:
        if not user_path.exists():
            raise UserError(f"run file for {spec.key} not found: {user_path}")
        parsed = read_run(user_path)
        record = FirstStageRecord(
            kind="run-file",
            label=f"run file {user_path.name}",
            path=str(user_path),
            sha256=parsed.sha256,
            reference_name=location.reference,
            reference_ndcg10=location.reference_for(spec),
            duplicate_lines=parsed.duplicate_lines,
        )
        return parsed.run, record
    if source.kind == "hub":
        filename = spec.run_file or source.file.format(name=spec.run_name or spec.key)
        path = hub_file(source.repo, filename, repo_type=source.repo_type)
        parsed = read_run(path)
        reference = spec.reference.get(source.reference) if source.reference else None
        record = FirstStageRecord(
            kind="hub",
            label=source.label,
            path=filename,
            repo=source.repo,
            revision=_snapshot_commit(path),
            sha256=parsed.sha256,
            reference_name=source.reference,
            reference_ndcg10=reference,
            duplicate_lines=parsed.duplicate_lines,
        )
        return parsed.run, record
    settings = Bm25Settings(language=spec.language, k1=source.k1, b=source.b)
    index = Bm25Index.open(dataset, settings)
    run = index.search(queries, depth)
    record = FirstStageRecord(kind="bm25s", label=source.label, settings=settings.describe())
    return run, record


def _snapshot_commit(path: Path) -> str | None:
    """The commit of a file in huggingface_hub's cache (…/snapshots/<commit>/<filename>)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


@dataclass
class Candidates:
    """The top-k first-stage candidates of every judged query, in first-stage order."""

    by_query: dict[str, list[tuple[str, float]]]
    judged_queries: int
    queries_without_run: list[str]
    self_matches_dropped: int
    run_queries_without_judgements: int
    queries_with_equal_scores: int

    def to_run(self) -> Run:
        return {q: dict(docs) for q, docs in self.by_query.items()}

    def coverage(self) -> dict[str, int]:
        return {
            "judged_queries": self.judged_queries,
            "queries_with_candidates": sum(1 for docs in self.by_query.values() if docs),
            "queries_without_run": len(self.queries_without_run),
            "self_matches_dropped": self.self_matches_dropped,
            "run_queries_without_judgements": self.run_queries_without_judgements,
            "queries_with_equal_scores": self.queries_with_equal_scores,
        }


def select_candidates(
    run: Run,
    qrels: dict[str, dict[str, int]],
    queries: dict[str, str],
    top_k: int,
    drop_self_matches: bool,
    dataset_key: str,
) -> Candidates:
    """Cut a run to the top-k of each judged query, after dropping self-matches if asked."""
    judged = [q for q in qrels if q in queries]
    shared = [q for q in judged if q in run]
    if not shared:
        raise UserError(
            f"the first-stage run for {dataset_key} shares no query with its qrels "
            f"({len(run)} run queries, {len(judged)} judged queries)"
        )
    by_query: dict[str, list[tuple[str, float]]] = {}
    dropped = 0
    for query_id in shared:
        ranked = trec_order(run[query_id])
        if drop_self_matches:
            kept = [(doc, score) for doc, score in ranked if doc != query_id]
            dropped += len(ranked) - len(kept)
            ranked = kept
        by_query[query_id] = ranked[:top_k]
    if not any(by_query.values()):
        raise UserError(f"the first-stage run for {dataset_key} gives no candidate documents")
    return Candidates(
        by_query=by_query,
        judged_queries=len(qrels),
        queries_without_run=[q for q in qrels if q not in by_query],
        self_matches_dropped=dropped,
        run_queries_without_judgements=sum(1 for q in run if q not in qrels),
        queries_with_equal_scores=sum(
            1 for q in shared if len(run[q]) > 1 and len(set(run[q].values())) == 1
        ),
    )
