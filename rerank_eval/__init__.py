"""rerank-eval: trustworthy nDCG@10 of document rerankers on BEIR and MIRACL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rerank_eval.rerankers.base import Reranker


def load_reranker(
    name_or_path: str, device: str | None = None, dtype: str | None = None, **settings: Any
) -> Reranker:
    """A reranker by preset name, hub id or checkpoint directory; see `rerank_eval.rerankers`."""
    from rerank_eval.rerankers import load_reranker as _load

    return _load(name_or_path, device=device, dtype=dtype, **settings)


__all__ = ["__version__", "load_reranker"]
