"""Independent reference computations for tests: trec_eval ordering, nDCG@k, R@k and Holm by hand."""

from __future__ import annotations

import math


def trec_ranking(docs: dict[str, float]) -> list[str]:
    """Doc ids by score descending, equal scores by doc id descending (trec_eval)."""
    by_id_desc = sorted(docs, reverse=True)
    return sorted(by_id_desc, key=lambda d: -docs[d])


def ndcg(ranking: list[str], judged: dict[str, int], k: int = 10) -> float:
    dcg = sum(max(judged.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranking[:k]))
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def first_stage_ndcg(run, qrels, top_k: int, drop_self: bool = False) -> dict[str, float]:
    """nDCG@10 of every judged query over the top-k of a run (missing queries score 0)."""
    values = {}
    for query_id, judged in qrels.items():
        ranking = trec_ranking(run.get(query_id, {}))
        if drop_self:
            ranking = [d for d in ranking if d != query_id]
        values[query_id] = ndcg(ranking[:top_k], judged)
    return values


def first_stage_recall(run, qrels, top_k: int) -> dict[str, float]:
    """R@k of every judged query with a relevant document: the share of its relevant documents
    (label > 0) in the run's top k."""
    values = {}
    for query_id, judged in qrels.items():
        relevant = {d for d, label in judged.items() if label > 0}
        if relevant:
            kept = set(trec_ranking(run.get(query_id, {}))[:top_k])
            values[query_id] = len(relevant & kept) / len(relevant)
    return values


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm written out: the i-th smallest (from 0) times (m - i), made monotone, capped at 1."""
    ranked = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for position, index in enumerate(ranked):
        running = max(running, (len(p) - position) * p[index])
        adjusted[index] = min(1.0, running)
    return adjusted


class QueueOverlap:
    """Holds that a pipeline queues work item k+1 on the device before it takes item k's result.

    `queued(k)` is called when item k is queued; `taken(k, last)` when its result is taken, and
    waits (up to `patience` seconds) for item k+1 to be queued unless k is the last. A pipeline that
    took each result before queuing the next would wait in vain, and `missed` says which items."""

    def __init__(self, patience: float = 10.0) -> None:
        import threading

        self.patience = patience
        self.events: dict[int, threading.Event] = {}
        self.lock = threading.Lock()
        self.missed: list[int] = []

    def _event(self, index: int):
        import threading

        with self.lock:
            return self.events.setdefault(index, threading.Event())

    def queued(self, index: int) -> None:
        self._event(index).set()

    def taken(self, index: int, last: bool) -> None:
        if not last and not self._event(index + 1).wait(self.patience):
            self.missed.append(index)
