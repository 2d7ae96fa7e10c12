"""Candidates: a first-stage run cut the same way whatever produced it.

Each judged query's documents in trec_eval order, self-matches dropped where the dataset calls for
it, then the top-k.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from rerank_eval.errors import UserError
from rerank_eval.runfiles import Run, format_run_lines, trec_order


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

    def sha256(self) -> str:
        """SHA-256 of what was reranked: each query's documents, ranks and first-stage scores, as
        TREC lines without a run tag, queries in id order. The same candidates hash alike whatever
        produced them (a saved run reused with --run, an encoder folder copied), so `compare` can
        tell the same candidates from other ones."""
        digest = hashlib.sha256()
        for query_id in sorted(self.by_query):
            for line in format_run_lines(query_id, self.by_query[query_id], "-"):
                digest.update(line.encode("utf-8"))
        return digest.hexdigest()

    def coverage(self) -> dict[str, int]:
        return {
            "judged_queries": self.judged_queries,
            "queries_with_candidates": sum(1 for docs in self.by_query.values() if docs),
            "queries_without_run": len(self.queries_without_run),
            "self_matches_dropped": self.self_matches_dropped,
            "run_queries_without_judgements": self.run_queries_without_judgements,
            "queries_with_equal_scores": self.queries_with_equal_scores,
        }


@dataclass(frozen=True)
class CandidatePolicy:
    """Which of a first stage's results become a dataset's candidates: each query's top `top_k`
    after dropping its own document where the dataset calls for it (ArguAna, Quora). The one home
    of that rule: a first stage is asked for `depth` results, one more than the top-k where a
    self-match may take a place, and `select` cuts its run."""

    top_k: int
    drop_self_matches: bool

    @property
    def depth(self) -> int:
        return self.top_k + (1 if self.drop_self_matches else 0)

    def select(
        self, run: Run, qrels: dict[str, dict[str, int]], queries: dict[str, str], dataset_key: str
    ) -> Candidates:
        return select_candidates(run, qrels, queries, self.top_k, self.drop_self_matches, dataset_key)


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
        # absent from the run, or in it with nothing left (a search with no hits, only a self-match)
        queries_without_run=[q for q in qrels if not by_query.get(q)],
        self_matches_dropped=dropped,
        run_queries_without_judgements=sum(1 for q in run if q not in qrels),
        queries_with_equal_scores=sum(
            1 for q in shared if len(run[q]) > 1 and len(set(run[q].values())) == 1
        ),
    )
