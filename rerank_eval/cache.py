"""rerank-eval's own cache folder (built-in BM25 indexes, corpus embeddings, score journals): where
it is, how its entries are keyed, and how a failed write there is reported."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError


def cache_root() -> Path:
    """`RERANK_EVAL_CACHE`, else `$XDG_CACHE_HOME/rerank-eval`, else `~/.cache/rerank-eval`."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rerank-eval"
    return Path(os.environ.get("RERANK_EVAL_CACHE", default))


def cache_key(parts: dict[str, Any]) -> str:
    """The key of a cache entry: a hash of everything that changes what the entry holds."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def disk_error(exc: OSError, path: Path, kept: str) -> UserError:
    """A write failure in one line; a full disk says so explicitly."""
    what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return UserError(f"{what} while writing {path}; {kept}")
