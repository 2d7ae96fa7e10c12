"""rerank-eval's own cache folder (built-in BM25 indexes, corpus embeddings, score journals): where
it is, how its entries are keyed, and how a failed write there is reported; and where the caches of
the libraries it uses (ir_datasets, huggingface_hub) are, which no result or export may write into."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rerank_eval.errors import UserError

try:
    import fcntl
except ImportError:  # (Windows)
    fcntl = None  # type: ignore[assignment]

#: the claim every `claim` grants where the system (or the file system) has no flock: work is then
#: shared out as without claims (duplicated, never wrong)
UNLOCKED = -1

#: added to every open of a file in the cache: users sharing a cache can each put files in it, and a
#: symbolic link one of them put under a cache file's name must not lead another's write outside it
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def cache_root() -> Path:
    """`RERANK_EVAL_CACHE`, else `$XDG_CACHE_HOME/rerank-eval`, else `~/.cache/rerank-eval`."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rerank-eval"
    return Path(os.environ.get("RERANK_EVAL_CACHE", default))


def ir_datasets_home() -> Path:
    """Where ir_datasets keeps datasets and their doc stores (its own default)."""
    return Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))


def hub_cache() -> tuple[str, Path]:
    """The variable and the folder that hold Hub downloads (models, published runs): HF_HOME, unless
    HF_HUB_CACHE puts them outside it, where a copy of HF_HOME would not hold them."""
    from huggingface_hub import constants

    home, hub = Path(constants.HF_HOME), Path(constants.HF_HUB_CACHE)
    return ("HF_HOME", home) if hub.resolve().is_relative_to(home.resolve()) else ("HF_HUB_CACHE", hub)


def caches() -> tuple[tuple[str, Path, str], ...]:
    """Every cache a run reads or fills: (its variable, its folder, what it holds)."""
    return (
        ("IR_DATASETS_HOME", ir_datasets_home(), "datasets, doc stores"),
        (*hub_cache(), "models, published runs"),
        ("RERANK_EVAL_CACHE", cache_root(), "BM25 and Lucene indexes, corpus embeddings"),
    )


def cache_holding(path: Path) -> str | None:
    """The cache `path` lies in, as its variable and folder ("RERANK_EVAL_CACHE FOLDER"), else
    None: results and exports written there could replace, or be taken for, its entries. A cache
    that holds the working folder (RERANK_EVAL_CACHE=.) holds every result and export, so it holds
    none here."""
    target, here = path.resolve(), Path.cwd().resolve()
    for variable, cache in _written_caches():
        if target.is_relative_to(cache) and not here.is_relative_to(cache):
            return f"{variable} {cache}"
    return None


def cache_held_by(path: Path) -> str | None:
    """The cache that lies inside `path`, as its variable and folder, else None: a run would write
    it there while it runs, and the result folder then could not be published in its place."""
    target = path.resolve()
    for variable, cache in _written_caches():
        if cache.is_relative_to(target) and cache != target:
            return f"{variable} {cache}"
    return None


def _written_caches() -> list[tuple[str, Path]]:
    """The caches a run writes in, resolved (of HF_HOME, only the hub cache holds what it downloads)."""
    from huggingface_hub import constants

    written = [
        ("IR_DATASETS_HOME", ir_datasets_home()),
        ("HF_HUB_CACHE", Path(constants.HF_HUB_CACHE)),
        ("RERANK_EVAL_CACHE", cache_root()),
    ]
    return [(variable, folder.resolve()) for variable, folder in written]


def cache_key(parts: dict[str, Any]) -> str:
    """The key of a cache entry: a hash of everything that changes what the entry holds."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def disk_error(exc: OSError, path: Path, kept: str) -> UserError:
    """A write failure in one line; a full disk says so explicitly."""
    what = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return UserError(f"{what} while writing {path}; {kept}")


def process_tag() -> str:
    """`HOST-PID`: names what this process writes in a cache that several processes, on one host or
    several sharing a file system, may use at once, so that none writes into another's file and
    what a killed process left can be told apart (`left_by_a_dead_process`). On Linux HOST also
    names the process-id namespace: containers on one machine may share its host name (host
    networking) while each numbers its processes from 1, and one cannot see the others' processes."""
    import socket

    host = socket.gethostname()
    with contextlib.suppress(OSError):
        host += f"_{os.stat('/proc/self/ns/pid').st_ino}"
    return f"{host.replace('-', '_').replace('.', '_')}-{os.getpid()}"


#: a process id as a tag writes it (Linux's are at most 4,194,304)
PID = re.compile(r"[0-9]{1,10}")


def left_by_a_dead_process(tag: str) -> bool:
    """Whether `tag` (`HOST-PID...`) names a process of this host that no longer runs; another host's
    processes are that host's to judge."""
    host, _, rest = tag.partition("-")
    pid = rest.split("-")[0]
    # (ASCII digits only: a name anyone sharing the cache made, `x-²-y.tmp`, is no process's)
    return host == process_tag().partition("-")[0] and PID.fullmatch(pid) is not None and not _alive(int(pid))


def open_own_temporary(path: Path, mode: str = "wb", **options: Any) -> tuple[Path, IO[Any]]:
    """A new file beside `path` to write it through, then rename into place, and its open handle:
    `NAME.HOST-PID-RANDOM.tmp`, made where no file was (`O_EXCL`), so that no other process writes
    into it (another container's with the same tag included) and no symbolic link someone sharing
    the cache put under a name is written through."""
    import secrets

    while True:
        temporary = path.with_name(f"{path.name}.{process_tag()}-{secrets.token_hex(4)}.tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666)
        except FileExistsError:
            continue
        return temporary, os.fdopen(descriptor, mode, **options)


def remove_dead_temporaries(folder: Path) -> None:
    """Remove the `open_own_temporary` files in `folder` of processes of this host that are gone (a
    kill -9 while writing; a corpus shard's can be gigabytes); one that cannot be removed (another
    user's, in a folder with the sticky bit) is left, as are the rest of the work's."""
    for left in folder.glob("*.tmp"):
        if left_by_a_dead_process(left.name.removesuffix(".tmp").rpartition(".")[2]):
            with contextlib.suppress(OSError):
                left.unlink(missing_ok=True)


def building_folder(folder: Path) -> Path:
    """A new, empty folder beside `folder` to build its content in, then rename into place.

    Its name says which host and process builds it (`NAME.building-HOST-PID-RANDOM`), so that
    processes sharing the cache never collide, and what a killed build left behind on this host
    can be told (`remove_left_by_killed_builds`). It takes the umask's permissions, as the rest of
    the cache does (a private folder, renamed into place, would shut out the users sharing it).
    """
    import secrets

    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_left_by_killed_builds(folder)
    while True:
        building = folder.with_name(f"{folder.name}.building-{process_tag()}-{secrets.token_hex(4)}")
        try:
            building.mkdir()
            return building
        except FileExistsError:
            continue


def remove_left_by_killed_builds(folder: Path) -> None:
    """Remove the folders that builds of `folder` killed on this host left (their process is
    gone); another host's are left to that host. Called wherever `folder` is looked for, built or
    not: once another process has built it, no build of it comes again to remove them."""
    import glob
    import shutil

    prefix = f"{folder.name}.building-"
    for left in folder.parent.glob(f"{glob.escape(prefix)}*"):
        if left_by_a_dead_process(left.name.removeprefix(prefix)):
            shutil.rmtree(left, ignore_errors=True)


@contextlib.contextmanager
def building_claim(folder: Path, what: str) -> Iterator[bool]:
    """The claim on building `folder` (`NAME.lock` beside it), held for the block, which is told
    whether the folder still needs building: a process that waited for another's build finds it
    built and loads it, instead of building it again beside it."""
    lock = folder.with_name(f"{folder.name}.lock")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        held = claim(lock)
        if held is None:
            holder = claims_holders([lock])
            print(f"waiting for {holder} that builds {what} ({folder})", file=sys.stderr, flush=True)
            held = claim(lock, wait=True)
    except OSError as exc:
        raise disk_error(exc, lock, "nothing was built") from None
    try:
        yield not folder.is_dir()
    finally:
        release(held)


def build_in_place(folder: Path, build: Callable[[Path], None], what: str) -> None:
    """Build `what` into a folder of its own (`building_folder`) and rename it to `folder` only
    once `build` returns: a failure or a kill leaves nothing at `folder`, and another process
    completing the same folder first is fine."""
    import shutil

    try:
        building = building_folder(folder)
    except OSError as exc:
        raise disk_error(exc, folder, "nothing was built") from None
    try:
        build(building)
        os.replace(building, folder)
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        if not folder.is_dir():  # not another process completing it first
            raise disk_error(exc, folder, f"nothing of the {what} was kept") from None
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def claim(path: Path, wait: bool = False) -> int | None:
    """An exclusive flock on the lock file `path` (made if need be): the descriptor that holds it
    until `release`, or, without `wait`, None where another process holds it.

    Processes sharing the cache claim a piece of work before doing it, so that two commands that
    need the same corpus encoded or the same index built share the work instead of each doing all
    of it. A flock ends with its process however it ends (`kill -9` too), so a claim never
    outlives its holder and a lock file is never stale; lock files stay (removing one under a
    waiter would let two processes hold "the" lock). A lock file is opened for writing where it
    can be (NFS locks only such files), else read-only (another user's, on a local disk, where
    that is enough), and never through a symbolic link (`NO_FOLLOW`). Where the file system has no
    locks, every claim is granted, with a note."""
    if fcntl is None:
        return UNLOCKED
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o666)
    except PermissionError:
        handle = os.open(path, os.O_RDONLY | NO_FOLLOW)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        return None
    except OSError:  # no locks here (ENOLCK, or EBADF for NFS and a file it cannot write)
        os.close(handle)
        _say_once_there_are_no_locks(path)
        return UNLOCKED
    except BaseException:  # an interrupt while waiting: nothing is left open, nothing held
        os.close(handle)
        raise
    with contextlib.suppress(OSError):  # who holds it, for the messages of those who wait (a name)
        os.ftruncate(handle, 0)
        os.pwrite(handle, process_tag().encode(), 0)
    return handle


def claims_holders(paths: list[Path]) -> str:
    """Who holds the claims on `paths`, for the messages of those who wait: `process HOST-PID`,
    `processes A, B`, or `another process` where no claim could record its holder."""
    holders = set()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                holders.add(handle.read(256).decode("utf-8", "replace").strip())
        except OSError:
            pass
    named = sorted(holders - {""})
    if not named:
        return "another process"
    return f"process{'es' * (len(named) > 1)} {', '.join(named)}"


_SAID_NO_LOCKS: set[Path] = set()


def _say_once_there_are_no_locks(path: Path) -> None:
    if path.parent not in _SAID_NO_LOCKS:
        _SAID_NO_LOCKS.add(path.parent)
        print(
            f"note: {path.parent} cannot be locked (a file system without locks); commands sharing "
            f"it at once each do all of the work",
            file=sys.stderr,
        )


def release(held: int) -> None:
    if held != UNLOCKED:
        os.close(held)  # (closing releases the flock)


def wait_for_claim(path: Path) -> None:
    """Return once no process holds a claim on `path` (its holder finished, failed or was killed)."""
    release(claim(path, wait=True))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
