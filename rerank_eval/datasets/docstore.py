"""ir_datasets' lz4 doc stores: built under a lock of rerank-eval's own, and cleared when a killed
build left them cut short.

ir_datasets writes such a store in place and takes it for built once its positions file holds
anything; each index's `.meta` is written last. A build killed between the two leaves a store where
every lookup misses, for good (or an empty positions file that cannot be opened); one killed earlier
is appended to by the next build. So a store whose data file (`bin`) exists but whose indexes lack
their `.meta` is cut short, unless a build holds the lock ir_datasets takes on `bin` while it
writes. rerank-eval's processes check, clear and build a store one at a time (`docstore_lock`, a
file beside the store), so that commands started together never clear a store another is building;
a cut-short store is renamed aside before it is deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerank_eval.cache import NO_FOLLOW, disk_error, left_by_a_dead_process, process_tag

ASIDE = ".cut-short-"  # a cleared store's folder while it is deleted: NAME.cut-short-HOST-PID
#: how long a lock on `bin` may outlast the build lock of a process that was killed: its locks end
#: one file at a time as it is torn down, so the build lock can end first
LAST_LOCK_SECONDS = 2.0


def lz4_store(store: Any) -> bool:
    """Whether `store` is ir_datasets' lz4 doc store (BEIR's, MIRACL's, Vaswani's) on a system with
    POSIX locks (elsewhere ir_datasets builds without them, and so does rerank-eval)."""
    from ir_datasets.indices.lz4_pickle import PickleLz4FullStore

    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return isinstance(store, PickleLz4FullStore)


@contextlib.contextmanager
def docstore_lock(store: Any, waiting: str) -> Iterator[None]:
    """Hold rerank-eval's build lock of an lz4 `store` (`waiting` is printed if another process
    holds it)."""
    import fcntl

    path = Path(f"{store.path}.rerank-eval.lock")
    try:  # (writable by the users sharing the ir_datasets folder, as the umask allows: a lock needs it)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o666)
    except OSError as exc:
        raise disk_error(exc, path, "nothing was built") from None
    try:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(waiting, file=sys.stderr)
            fcntl.lockf(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # (closing releases the lock)


def _locked_within(handle: int, seconds: float) -> bool:
    """Whether an exclusive lock on `handle` was taken within `seconds` (tried every 50 ms)."""
    import fcntl
    import time

    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def clear_interrupted_docstore(store: Any) -> Path | None:
    """Remove what a killed build of the lz4 `store` left (returning its folder), so that its next
    use builds it from the start; None when there is nothing to clear (a whole store, or one a
    build is writing). Called under `docstore_lock`."""

    from ir_datasets.indices.lz4_pickle import safe_str

    folder = Path(store.path)
    for left in folder.parent.glob(f"{folder.name}{ASIDE}*"):  # a clearing killed before it ended
        if left_by_a_dead_process(left.name.split(ASIDE, 1)[1]):
            shutil.rmtree(left, ignore_errors=True)
    fields = getattr(store.lookup, "_index_fields", None) or [store._id_field]
    if all((folder / f"idx.{safe_str(field)}.meta").is_file() for field in fields):
        return None
    try:  # never created here: a folder without data holds nothing a build would append to
        handle = os.open(folder / "bin", os.O_WRONLY | os.O_APPEND | NO_FOLLOW)
    except OSError:
        return None
    try:
        if not _locked_within(handle, LAST_LOCK_SECONDS):  # a build of another program: left to finish
            return None
        aside = folder.with_name(f"{folder.name}{ASIDE}{process_tag()}")
        os.rename(folder, aside)
    except OSError:
        return None
    finally:
        os.close(handle)
    shutil.rmtree(aside, ignore_errors=True)
    return folder
