"""The `bm25` preset: no model, the first-stage order kept as the reranked order.

It makes the whole pipeline runnable without a neural model and gives the baseline row of a
comparison: its reranked metrics equal the first stage's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rerank_eval.rerankers.base import Reranker, RerankRequest


class FirstStageOrder(Reranker):
    family = "first-stage-order"
    queries_per_call = 64

    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        # Scored by first-stage rank (best = count), so the presented order does not matter.
        return [
            len(r.first_stage_ranks) - np.asarray(r.first_stage_ranks, dtype=np.float32) for r in requests
        ]

    def describe(self) -> dict[str, Any]:
        return {"family": self.family, "model": None}
