"""Export files (CSV, tables, plots) beside the result folders they are made from: refused before
any work when they could not be written as regular files or would land inside a result folder or
the cache, then written whole through a staged file of a fresh name, or not at all."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from rerank_eval.cache import cache_holding, left_by_a_dead_process, process_tag
from rerank_eval.errors import UserError
from rerank_eval.paths import special_file_kind
from rerank_eval.textlines import NOT_IN_A_NEW_NAME


def check_output_paths(paths: Sequence[Path | None]) -> None:
    """Refuse, before any work, output files that cannot be written as regular files: a device,
    FIFO, socket or directory (which an atomic rename would replace), a missing folder, two
    options naming one file (one output would silently overwrite the other), a file inside a
    result folder (the one it is made from, or another: each is checked against its own hashes)
    or inside the cache (a score journal overwritten is scores lost), or a name holding a control
    character."""
    seen: dict[Path, Path] = {}
    for path in (p for p in paths if p is not None):
        if NOT_IN_A_NEW_NAME.search(str(path)):  # echoed as written: an escape would act on the terminal
            raise UserError(f"cannot write {str(path)!r}: its name holds a control character")
        kind = special_file_kind(path)
        if kind:
            raise UserError(f"cannot write {path}: it is {kind}; give the path of a regular file")
        target = path.resolve()
        holder = _folder_holding(target)
        if holder is not None:
            raise UserError(f"cannot write {path}: it lies inside {holder}")
        if target in seen:
            raise UserError(f"{seen[target]} and {path} are the same file; give each output its own")
        seen[target] = path
        if not target.parent.is_dir():
            raise UserError(f"cannot write {path}: its folder {target.parent} does not exist")


def _folder_holding(target: Path) -> str | None:
    """The result folder or the cache that `target` lies in, said; None where it lies in neither
    (a folder of several results may hold outputs beside them)."""
    for parent in target.parents:
        if is_result_folder(parent):
            return f"{parent}, a result folder"
    cache = cache_holding(target)
    return None if cache is None else f"the cache {cache}"


def is_result_folder(folder: Path) -> bool:
    """What a result folder holds, both: a `manifest.json` alone may be a web app's."""
    return (folder / "manifest.json").is_file() and (folder / "per_query.csv").is_file()


def write_output(path: Path, write: Callable[[Path], None]) -> None:
    """An export file (CSV, table, plot) written whole through a temporary file beside it, or one
    clear error. A symlink's target is written (the link stays); a path that is not a regular file
    is refused, never replaced."""
    check_output_paths([path])
    target = path.resolve()
    temporary = None
    try:
        temporary = _new_file_beside(target)
        write(temporary)
        temporary.replace(target)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:  # (after a failure or a Ctrl-C: the staged file goes; once renamed, it is not there)
        with contextlib.suppress(OSError):  # a read-only folder refuses the clean-up too
            if temporary is not None:
                temporary.unlink(missing_ok=True)


def _new_file_beside(target: Path) -> Path:
    """An empty file of a name no one else took, made in `target`'s folder: a fixed temporary name
    could be a symlink someone put there, and the output would overwrite what it points to. Its
    name says which process stages it (`.NAME.HOST-PID-RANDOM.tmp`), so that what a killed export
    left is removed by the next one (a kill -9 runs no clean-up)."""
    _remove_left_by_killed_exports(target)
    while True:
        temporary = target.with_name(f".{target.name}.{process_tag()}-{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temporary
        except FileExistsError:
            continue


def _remove_left_by_killed_exports(target: Path) -> None:
    """Remove the files staged for `target` by processes of this host that are gone; another host's
    (a shared file system) are that host's to judge, a live process's are its own."""
    staged = re.compile(re.escape(f".{target.name}.") + r"([^-]+-\d+)-[0-9a-f]{12}\.tmp")
    for left in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        found = staged.fullmatch(left.name)
        if found and left_by_a_dead_process(found.group(1)):
            with contextlib.suppress(OSError):  # (another export may be removing it too)
                left.unlink()
