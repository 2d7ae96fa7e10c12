"""Names that become file names, and paths that must stay inside their root.

A benchmarks file may come from someone else, and a dataset key, suite or preset name ends up in
file names (`runs/<key>.trec`, journals, result folders). Names are checked where the config is
read (`name_problem`), free text such as a Hub id becomes a file name through `file_name`, and
every path written under a root is checked to stay inside it (`inside`) before anything is written.
"""

from __future__ import annotations

import errno
import re
import stat
import string
from pathlib import Path

from rerank_eval.errors import UserError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a file (None when it can): letters, digits and . _ + - only,
    starting with a letter or digit, at most 128 characters, no `..`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        return (
            f"{name!r} cannot be used as a name: use letters, digits and . _ + - (starting with a "
            f"letter or digit, no '..', at most 128 characters)"
        )
    return None


def repository_path_problem(path: str) -> str | None:
    """Why `path` is not a plain relative path inside a repository (None when it is): absolute,
    with a backslash, an empty part, `.` or `..` (a run file's path, a part of one)."""
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
        return f"{path!r} is not a path inside the repository (no '..', not absolute)"
    return None


def fills_only(template: str, fields: tuple[str, ...]) -> bool:
    """Whether `template`'s format fields are all plain `{FIELD}`s of `fields`: no other field,
    attribute, index, conversion or format spec, as a template may come from someone else (and a
    width alone, `{key:>3000000000}`, asks str.format for gigabytes)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:  # an unmatched brace
        return False
    return all(field in (None, *fields) and not (spec or conversion) for _, field, spec, conversion in parts)


def file_name(text: str) -> str:
    """A file-name piece from free text (a Hub id, a dataset id): anything but letters, digits and
    . _ + - becomes _, and a name of dots only is prefixed, so it never leaves its folder."""
    name = _UNSAFE.sub("_", text)[:128] or "_"
    return f"_{name}" if set(name) == {"."} else name


def lies_inside(root: Path, path: Path) -> bool:
    """Whether `path` resolves (symlinks included) to `root` or a place inside it."""
    resolved_root = root.resolve()
    resolved = path.resolve()
    return resolved == resolved_root or resolved_root in resolved.parents


def inside(root: Path, path: Path) -> Path:
    """`path`, after checking that it resolves (symlinks included) to a place inside `root`."""
    if not lies_inside(root, path):
        raise UserError(f"refusing to write {path}: it lies outside {root}")
    return path


def special_file_kind(path: Path) -> str | None:
    """What a path that is not a regular file is ("a directory", "a FIFO", ...); None for a
    regular file or a path that does not exist. A symlink loop is one of the answers."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), None)


def refuse_special_file(path: Path, named: str) -> None:
    """Refuse, in one line starting with `named`, a path that exists but is no regular file: a
    FIFO would block its reader forever, a device such as /dev/zero never end, a folder fail
    obscurely. A missing path passes (its reader says so in its own words)."""
    kind = special_file_kind(path)
    if kind:
        raise UserError(f"{named} is {kind}, not a file")


def data_file_problem(path: Path, limit: int) -> str | None:
    """Why `path` cannot be read whole as a data file of at most `limit` bytes (None when it can):
    missing, not a regular file (a FIFO would block the reader, a device such as /dev/zero never
    ends), or larger than the limit."""
    kind = special_file_kind(path)
    if kind:
        return f"is {kind}"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    return f"holds {size:,} bytes, more than {limit:,}" if size > limit else None
