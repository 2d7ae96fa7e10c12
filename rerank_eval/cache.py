"""rerank-eval's own cache folder (built-in BM25 indexes, score journals)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`RERANK_EVAL_CACHE`, else `$XDG_CACHE_HOME/rerank-eval`, else `~/.cache/rerank-eval`."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rerank-eval"
    return Path(os.environ.get("RERANK_EVAL_CACHE", default))
