"""The `bm25` preset: no model, the first-stage order kept as the reranked order.

It makes the whole pipeline runnable without a neural model and gives the baseline row of a
comparison: its reranked metrics equal the first stage's, and its run holds the first stage's own
scores (exact, float64), so it can be fused or checked against another implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank_eval.rerankers.base import Reranker, RerankRequest


class FirstStageOrder(Reranker):
    family = "first-stage-order"
    queries_per_call = 64
    scores_its_own = False

    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        return [self._scores(r) for r in requests]

    @staticmethod
    def _scores(request: RerankRequest) -> np.ndarray:
        """The first stage's scores; without them (the `score` API), scores by first-stage rank
        (best = count). Either way the presented order does not matter."""
        if request.first_stage_scores:
            return np.asarray(request.first_stage_scores, dtype=np.float64)
        return len(request.first_stage_ranks) - np.asarray(request.first_stage_ranks, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "model": None, "scores": "the first stage's"}
