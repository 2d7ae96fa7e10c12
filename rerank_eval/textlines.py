"""Strict line-by-line reading of text files that come from anyone (run files, local datasets).

Only the current line is ever held: a line longer than `MAX_LINE_BYTES` is refused before it is
read whole, so no file, however large or without line ends, can exhaust memory through its lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError

#: characters no name, id or label holds: line breaks, tabs, escapes (C0, DEL and C1)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: a longer line is not a document, query or run line of any benchmark (MIRACL's longest passage
#: is a few KB)
MAX_LINE_BYTES = 16 * 1024 * 1024


def numbered_lines(path: Path, digest: Any = None) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 file with their 1-based numbers (a byte-order mark and line
    ends removed); a line over `MAX_LINE_BYTES` or not UTF-8 is refused. `digest` (a hashlib
    object), if given, is fed every byte of the file as read, so that the file is hashed in the
    same pass."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise UserError(f"{path}, line {number}: longer than {MAX_LINE_BYTES // 2**20} MiB")
            if digest is not None:
                digest.update(raw)
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise UserError(f"{path}, line {number}: not valid UTF-8") from None
            if line.strip():
                yield number, line
