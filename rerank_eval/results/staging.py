"""The staging folder a result is assembled in (`<name>.incomplete/`), held by one run at a time.

A run that finds the folder left by a killed run clears it and goes on. Two runs given one `--out`
at the same time would each take the other's folder for such a leftover: each clears what the
other wrote, and the one publishing last moves a mix of both into place. So the run writing a
staging folder holds an exclusive `flock` on the folder itself (released when its process ends,
however it ends, and any process it forked), and a run that cannot take it is refused in one line.
The lock is on the folder, not on a file beside it, so nothing is left next to the results.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rerank_eval.errors import UserError, term

try:
    import fcntl
except ImportError:  # (Windows)
    fcntl = None  # type: ignore[assignment]

#: staging folders a run locked before its result writer exists (the default result name it
#: claimed), by path; the writer takes the lock over from here (`hold_ahead`)
_HELD_AHEAD: dict[Path, int] = {}

#: what a run writes into its staging folder (besides `runs/<dataset>.trec` and `.tmp` files)
RESULT_FILES = {"runs", "per_query.csv", "per_query_blocks.csv", "summary.csv", "manifest.json"}


def left_by_a_run(staging: Path) -> bool:
    """Whether a staging folder holds only what a run writes there (its files, runs and their
    temporary files), as an interrupted run leaves it."""
    for entry in staging.iterdir():
        if entry.name.endswith(".tmp"):
            continue
        if entry.name not in RESULT_FILES or entry.is_symlink():
            return False
        if entry.name == "runs" and (
            not entry.is_dir()
            or not all(
                p.name.endswith((".trec", ".tmp")) and p.is_file() and not p.is_symlink()
                for p in entry.iterdir()
            )
        ):
            return False
    return True


def claim(staging: Path, final: Path) -> int | None:
    """Create or take over `staging` (for the result `final`), emptied, with an empty `runs/`;
    the returned descriptor holds it until `release` (None where the system has no flock).

    A symlink there would send the result elsewhere, and a folder holding anything a run does not
    write is someone's, not to be deleted: both are refused, as is a folder another run holds."""
    held = _lock(staging, final)
    try:
        if not left_by_a_run(staging):
            raise UserError(
                f"{staging} holds files no run writes; remove it, or choose another {term('out')}",
                {"out": "folder"},
            )
        for entry in staging.iterdir():  # the folder itself stays: it is what is locked
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        (staging / "runs").mkdir()
    except BaseException:
        release(held)
        raise
    return held


def _lock(staging: Path, final: Path) -> int | None:
    """The folder at `staging`, made if need be and locked; the lock is checked to be on the folder
    now at that path, since its holder may have renamed (published) or removed it in between."""
    ahead = _HELD_AHEAD.pop(staging.resolve(), None)
    if ahead is not None and same_folder(ahead, staging):
        return ahead  # this run's own claim on its default name
    release(ahead)
    for _ in range(3):
        if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
            raise UserError(f"{staging} is in the way of the result (not a folder this tool left); remove it")
        staging.mkdir(parents=True, exist_ok=True)
        held = _locked(staging)
        # (Windows, or a file system without locks: runs given one --out there are not told apart)
        if held == "unlockable":
            return None
        if held == "held":
            break
        if isinstance(held, int):
            if same_folder(held, staging):
                return held
            os.close(held)
    raise UserError(
        f"another run is writing the result {final} (in {staging}); wait for it to end, or choose "
        f"another {term('out')}",
        {"out": "folder"},
    )


def try_lock(folder: Path) -> int | None:
    """A descriptor holding `folder`'s exclusive lock, or None where a live run holds it, the
    folder is gone, or it cannot be locked here (no flock, a file system without locks). The
    caller checks it is still the folder at that path (`same_folder`)."""
    held = _locked(folder)
    return held if isinstance(held, int) else None


def _locked(folder: Path) -> int | str:
    """`folder` locked (its descriptor), else why not: "held", "gone" or "unlockable"."""
    if fcntl is None:
        return "unlockable"
    try:
        held = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return "gone"
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(held)
        return "held"
    except OSError:  # (ENOLCK: some network and FUSE file systems have no locks)
        os.close(held)
        return "unlockable"
    return held


def hold_ahead(folder: Path) -> bool:
    """Lock `folder`, a name this run has just made for its result, until the result writer takes
    the lock over or `let_go`: a run killed before it publishes leaves the folder unlocked, so the
    next run can tell it from a live run's. False where another run took it in between (removed
    it, or locked it first); True unlocked where the file system has no locks (nothing is swept
    there: `try_lock` finds every folder unlockable)."""
    held = _locked(folder)
    if held == "unlockable":
        return True
    if not isinstance(held, int):
        return False
    if not same_folder(held, folder):
        release(held)
        return False
    _HELD_AHEAD[folder.resolve()] = held
    return True


def let_go(folder: Path) -> None:
    """Give up a lock `hold_ahead` took that no writer took over."""
    release(_HELD_AHEAD.pop(folder.resolve(), None))


def same_folder(held: int, staging: Path) -> bool:
    try:
        now = os.lstat(staging)
    except FileNotFoundError:
        return False
    mine = os.fstat(held)
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def release(held: int | None) -> None:
    """Give the folder up (closing releases the lock); None holds nothing."""
    if held is not None:
        os.close(held)
