"""Strict line-by-line reading of text files that come from anyone (run files, local datasets).

Only the current line is ever held: a line longer than `MAX_LINE_BYTES` is refused before it is
read whole, so no file, however large or without line ends, can exhaust memory through its lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rerank_eval.errors import UserError

#: characters no name, id or label holds: line breaks, tabs, escapes (C0, DEL and C1)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: the controls of text direction (embeddings, overrides, isolates, and the marks), with which a
#: name shows in another order than it reads ("Trojan Source", CVE-2021-42574) in a terminal, a
#: table or a web page. Arabic and Persian text holds the marks, so ids, prompts and the results of
#: earlier versions are read with them; a name rerank-eval is given to write under (a result
#: folder, an export, a model or file named on the command line) is refused with one, and a
#: compared run's label shows them escaped.
DIRECTION_CONTROLS = re.compile(r"[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: what a name given for rerank-eval to write under may not hold
NOT_IN_A_NEW_NAME = re.compile(f"{CONTROL_CHARACTERS.pattern}|{DIRECTION_CONTROLS.pattern}")
#: a longer line is not a document, query or run line of any benchmark (MIRACL's longest passage
#: is a few KB)
MAX_LINE_BYTES = 16 * 1024 * 1024
#: a JSON escape of half a surrogate pair (`\ud800`), which may stand alone in valid JSON
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class JsonLineError(Exception):
    """Why one line is not a JSON value rerank-eval reads (the caller adds file and line)."""


def json_line(line: str) -> Any:
    """One line's JSON value, read as strictly as the files around it where it is read: an object
    naming one of its own keys twice (which value was meant? `json` keeps the last silently) and
    a string value of it holding half a surrogate pair (valid JSON, but no text: tokenizers and
    hashes refuse it later) raise `JsonLineError`, as does anything `json` cannot read. Objects
    nested in it, which no reader here uses, are left as they are."""
    twice: list[tuple[dict[str, Any], str]] = []

    def keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value: dict[str, Any] = {}
        repeated = None
        for key, item in pairs:
            if repeated is None and key in value:
                repeated = key
            value[key] = item
        if repeated is not None:
            twice.append((value, repeated))
        return value

    try:
        value = json.loads(line, object_pairs_hook=keys_once)
    except json.JSONDecodeError as exc:
        raise JsonLineError(f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise JsonLineError("JSON nested too deeply") from None
    except ValueError:  # Python reads no integer of more than 4,300 digits
        raise JsonLineError("not valid JSON (a number too long to read)") from None
    repeated = next((key for obj, key in twice if obj is value), None)
    if repeated is not None:
        raise JsonLineError(f"the JSON object names {repeated[:80]!r} twice")
    if isinstance(value, dict) and SURROGATE_ESCAPE.search(line):
        for key, item in value.items():
            half = (
                next((c for c in item if "\ud800" <= c <= "\udfff"), None) if isinstance(item, str) else None
            )
            if half is not None:  # (a whole pair was read as the one character it stands for)
                raise JsonLineError(f"{key[:80]!r} holds half a surrogate pair ({half!r}), which is no text")
    return value


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
        while raw := _read_line(handle, path, number + 1):
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


def _read_line(handle: Any, path: Path, number: int) -> bytes:
    try:
        return handle.readline(MAX_LINE_BYTES + 1)
    except OSError as exc:  # a disk error, a file of /proc that refuses reads
        raise UserError(f"cannot read {path}, line {number}: {exc.strerror}") from None
