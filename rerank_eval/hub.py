"""Downloads from the Hugging Face Hub through `huggingface_hub` (its cache, resume, offline mode).

The only thing added here is failing fast: when a file is not cached and the Hub cannot be
reached, `huggingface_hub` retries for tens of seconds; we check reachability first and say in one
line what is missing and how to provide it.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from rerank_eval.errors import MissingDownload, UserError


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def internet_unreachable() -> bool:
    """Whether downloads cannot happen here: HF_HUB_OFFLINE is set or the Hub cannot be reached."""
    try:
        _ensure_downloadable("a probe")
    except MissingDownload:
        return True
    return False


def _missing(what: str, why: str) -> MissingDownload:
    from rerank_eval.cache import hub_cache

    variable, folder = hub_cache()
    return MissingDownload(f"{what} is not cached and {why}", what, str(folder), variable)


def _ensure_downloadable(what: str) -> None:
    """Fail at once, naming `what`, when the Hub is off (HF_HUB_OFFLINE) or cannot be reached."""
    from huggingface_hub import constants

    if hub_offline():
        raise _missing(what, "HF_HUB_OFFLINE is set")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    port = urlparse(constants.ENDPOINT).port or 443
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise _missing(what, f"{host} cannot be reached ({exc.strerror or exc})") from None


def hub_file(repo_id: str, filename: str, repo_type: str = "model", kind: str = "file") -> Path:
    """A file of a Hub repository, from the local cache when present, else downloaded; `kind`
    says what it is in messages ("run file")."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    what = f"{kind} {repo_id}/{filename}"
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    _ensure_downloadable(what)
    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type))
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"cannot download {what}: {str(exc).splitlines()[0][:200]}") from None


#: a Hub revision: a commit, a branch or tag name, or a pull request's ref (refs/pr/1), in a subset
#: of git's ref names that never leads out of a folder (no `..`, `//`, leading `/`, `-` or `.`)
REVISION = re.compile(r"(?!.*\.\.)(?!.*//)(?![/.-])[A-Za-z0-9._/+@-]{1,255}(?<![/.])")


def revision_problem(revision: str) -> str | None:
    """Why a revision is no ref name, refused before huggingface_hub joins it to its cache folder
    (`refs/REVISION`, read offline and written after a download): a config is untrusted, and
    `../../x` would name a file outside that cache. None where it may be one."""
    if REVISION.fullmatch(revision) and not revision.endswith(".lock"):
        return None
    return f"revision {revision!r} is not a commit, branch or tag name"


def hub_snapshot(repo_id: str, allow_patterns: list[str], revision: str | None = None) -> Path:
    """A local snapshot folder of a Hub model repository (cached, else downloaded)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    problem = revision_problem(revision) if revision is not None else None
    if problem:
        raise UserError(f"model {repo_id}: {problem}")
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=allow_patterns, local_files_only=True
            )
        )
    except LocalEntryNotFoundError:
        pass
    _ensure_downloadable(f"model {repo_id}")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns))
    except (HfHubHTTPError, OSError) as exc:
        raise UserError(f"cannot download {repo_id}: {str(exc).splitlines()[0][:200]}") from None
