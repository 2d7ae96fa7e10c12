"""What a result records of the software that made it: the versions of the packages its numbers
depend on, and rerank-eval's own git commit (marked where the running source differs from it)."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "ir_datasets",
    "ir_measures",
    "pytrec_eval_terrier",
    "bm25s",
    "PyStemmer",
    "huggingface_hub",
    "numpy",
    "pandas",
    "scipy",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: rerank-eval's own source, whose git commit a manifest records
SOURCE = Path(__file__).resolve().parents[1]


@functools.cache
def source_revision(folder: Path = SOURCE) -> str | None:
    """The git commit of rerank-eval's own source (`folder`), when it runs from a checkout, with
    `+modified` where its tracked files differ from that commit (the commit alone would name code
    that did not run; `+unknown` where git could not say). Read once, when a run starts
    (`execute`): a commit made while it runs is not the code it ran."""

    def git(*args: str) -> str | None:
        try:  # (no optional locks: a status refreshes the index, which is the user's)
            done = subprocess.run(
                ["git", "--no-optional-locks", "-C", str(folder), *args],
                capture_output=True, text=True, timeout=5, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    if changed is None:  # (unknown is not clean)
        return commit + "+unknown"
    return commit + ("+modified" if changed else "")
