"""The one small interface every reranker family implements.

A reranker takes a query and its candidate texts and returns one float32 score per candidate, in
input order. `score_batch` is the batching hook: the runner hands it a chunk of several queries at
once, so a family can pack work from different queries into one forward pass. Float rounding
follows batch composition, so a family's scores must depend only on the chunk it is handed (never
on what earlier calls computed) and on its configured batching (`batching`): the runner's chunks
are fixed, so a resumed run computes every score exactly as an uninterrupted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from rerank_eval.errors import UserError


@dataclass(frozen=True)
class RerankRequest:
    """One query and its candidates, in the order the model is to see them."""

    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    texts: tuple[str, ...]
    #: 0-based first-stage rank of each candidate (candidates may be presented in another order).
    first_stage_ranks: tuple[int, ...]
    #: the first stage's score of each candidate, in presentation order (empty when unknown)
    first_stage_scores: tuple[float, ...] = ()


# How a reranker's messages name its settings: the library's words, or the CLI's --set.
SETTING_TERMS = {"settings": "the setting"}


@dataclass(frozen=True)
class DatasetContext:
    """What a reranker may know of the dataset it is about to score: its key, and the instructions
    its config gives models that take one (by preset name or family)."""

    key: str
    instructions: dict[str, str] = field(default_factory=dict)


class Reranker(ABC):
    """Scores candidates; subclasses set `family` and implement `score_batch` and `describe`."""

    family: ClassVar[str]
    #: The name the user chose it by (preset, hub id or path); set by `load_reranker`.
    name: str = ""
    #: How many queries the runner hands to one `score_batch` call (its fixed chunk size).
    queries_per_call: int = 1
    #: False for a scorer that hands back the first stage's own scores: their ties are the first
    #: stage's, and kept in its order by definition, so there is nothing to warn about.
    scores_its_own: ClassVar[bool] = True
    #: Called before each forward pass; the runner's raises there to abandon the chunk in progress
    #: after a stop request.
    forward_hook: Callable[[], None] | None = None

    def score(self, query: str, docs: list[str]) -> list[float]:
        """Scores of `docs` for `query`, in input order."""
        request = RerankRequest(
            query_id="query",
            query=query,
            doc_ids=tuple(str(i) for i in range(len(docs))),
            texts=tuple(docs),
            first_stage_ranks=tuple(range(len(docs))),
        )
        return [float(s) for s in self.score_batch([request])[0]]

    @abstractmethod
    def score_batch(self, requests: Sequence[RerankRequest]) -> list[np.ndarray]:
        """One float32 (or float64) array per request, aligned with its `texts`."""

    def prepare(self, requests: Sequence[RerankRequest]) -> Any:
        """CPU-side work for a batch (tokenization); the runner runs it in a background thread
        for the next batch while the accelerator scores the current one."""
        return list(requests)

    def score_prepared(self, prepared: Any) -> list[np.ndarray]:
        """Scores of a batch made ready by `prepare` (may be retried with smaller batches)."""
        return self.score_batch(prepared)

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Everything about the model worth recording (identity, revision, settings, dtype)."""

    def begin_dataset(self, dataset: DatasetContext) -> None:  # noqa: B027 - optional hook
        """Called before each dataset: drop per-dataset caches, pick per-dataset settings."""

    def score_identity(self) -> dict[str, Any]:
        """What determines the scores, for the journal's cache key (describe() unless narrower)."""
        return self.describe()

    def batching(self) -> dict[str, Any]:
        """How work is grouped into forward passes, as configured (float rounding follows it, so a
        resumed run reuses scores only under the same batching); {} when nothing is batched."""
        return {}

    def before_forward(self) -> None:
        """Called by a family before each forward pass (where a stop request abandons the chunk)."""
        if self.forward_hook is not None:
            self.forward_hook()

    def notes(self, request: RerankRequest) -> dict[str, Any]:
        """Facts about how the last chunk scored `request` (journaled and reported per query)."""
        return {}

    def runtime_stats(self) -> dict[str, Any]:
        """How the work was executed (batch sizes, retries); recorded, never part of a key."""
        return {}

    def shrink_batch_budget(self) -> bool:
        """After an out-of-memory error: use smaller batches; False when they cannot shrink."""
        return False

    def restore_batch_budget(self) -> None:  # noqa: B027 - optional hook
        """Back to the configured budget before each chunk, so that a budget shrunk for one chunk
        never changes how a later one is batched (a resumed run would not have shrunk it)."""

    def out_of_memory_message(self, requests: Sequence[RerankRequest]) -> str:
        """Why the smallest possible batch still does not fit, and what would make it fit (naming
        settings through `term("settings")`)."""
        ids = ", ".join(r.query_id for r in requests[:3])
        return f"out of GPU memory scoring query {ids} even with the smallest batch"

    def out_of_memory_error(self, requests: Sequence[RerankRequest]) -> UserError:
        return UserError(self.out_of_memory_message(requests), SETTING_TERMS)
