"""Downloads from the Hugging Face Hub through `huggingface_hub` (its cache, resume, offline mode).

The only thing added here is failing fast: when a file is not cached and the Hub cannot be
reached, `huggingface_hub` retries for tens of seconds; we check reachability first and say in one
line what is missing and how to provide it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from rerank_eval.errors import UserError

OFFLINE_HINT = (
    "run `rerank-eval fetch` on a machine with internet and copy the Hugging Face cache (HF_HOME) here"
)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _ensure_reachable(what: str) -> None:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    port = urlparse(constants.ENDPOINT).port or 443
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"{what} is not cached and {host} cannot be reached ({exc.strerror or exc}); {OFFLINE_HINT}"
        ) from None


def hub_file(repo_id: str, filename: str, repo_type: str = "model") -> Path:
    """A file of a Hub repository, from the local cache when present, else downloaded."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    what = f"{repo_id}/{filename}"
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise UserError(f"{what} is not cached and HF_HUB_OFFLINE is set; {OFFLINE_HINT}")
    _ensure_reachable(what)
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"cannot download {what}: {str(exc).splitlines()[0][:200]}") from None


def hub_snapshot(repo_id: str, allow_patterns: list[str], revision: str | None = None) -> Path:
    """A local snapshot folder of a Hub model repository (cached, else downloaded)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=allow_patterns, local_files_only=True
            )
        )
    except LocalEntryNotFoundError:
        pass
    if hub_offline():
        raise UserError(f"model {repo_id} is not cached and HF_HUB_OFFLINE is set; {OFFLINE_HINT}")
    _ensure_reachable(f"model {repo_id}")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"cannot download {repo_id}: {str(exc).splitlines()[0][:200]}") from None
