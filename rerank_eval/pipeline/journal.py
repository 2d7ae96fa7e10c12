"""Per-query score journals: nothing computed is lost when a run dies.

Scores are appended as JSON lines as they are produced and flushed and synced after every chunk
of queries. A journal is named by a cache key of everything that changes scores (model identity
and settings, scorer version, how work is chunked and batched, dataset, first-stage file, top-k,
self-match policy, candidate order), never by the output folder, so re-running the same command
after a crash skips the chunks already scored, and changing any of those never reuses old scores.
A line may carry notes beside the scores: facts about how the query was scored (a listwise
model's block sizes), kept so that a resumed run reports them as an uninterrupted one does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerank_eval.cache import (
    NO_FOLLOW,
    cache_root,
    disk_error,
    open_own_temporary,
    remove_dead_temporaries,
)
from rerank_eval.errors import UserError, warn
from rerank_eval.paths import inside
from rerank_eval.typed import is_kind, is_positive_integer

# 2: queries scored in fixed chunks (see pipeline.score.query_chunks), lines may carry notes
JOURNAL_FORMAT = 2
RECORD_KEYS = ("q", "docs", "scores")


@dataclass(frozen=True)
class ScoredQuery:
    """One query's scores (first-stage order; float64, exact for a model's float32 and for a first
    stage's float64 scores) and notes on how they were computed."""

    scores: np.ndarray
    notes: dict[str, Any] = field(default_factory=dict)


def journal_path(dataset_key: str, key: str, rank: int = 0, world: int = 1) -> Path:
    """One file per key, or one per rank of a multi-process run (`.rank{r}-of-{w}`)."""
    stem = f"{dataset_key}-{key[:20]}"
    name = f"{stem}.jsonl" if world == 1 else f"{stem}.rank{rank}-of-{world}.jsonl"
    return inside(cache_root() / "journals", cache_root() / "journals" / name)


_RANK_SUFFIX = re.compile(r"(\.rank\d+-of-\d+)?\.jsonl$")


def sibling_journals(path: Path) -> list[Path]:
    """The other files of the same key (other ranks, or a run with another process count); a dataset
    key may hold dots, so the stem is what precedes the file's own suffixes, matched exactly. A link
    there is none of them: it is not this process's to replace, and is never read through."""
    stem = _RANK_SUFFIX.sub("", path.name)
    candidates = [path.parent / f"{stem}.jsonl", *path.parent.glob(f"{stem}.rank*-of-*.jsonl")]
    same_key = {p for p in candidates if _RANK_SUFFIX.sub("", p.name) == stem}
    return sorted(p for p in same_key if p != path and p.is_file() and not p.is_symlink())  # (read only)


def _file_bytes(path: Path) -> bytes | None:
    """What the file at `path` holds (nothing where there is none), or None where `path` is not a
    file: a symbolic link (not followed), a folder, a named pipe (not waited on)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | NO_FOLLOW)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link
            return None
        raise UserError(f"cannot read the score journal {path}: {exc.strerror or exc}") from None
    with os.fdopen(descriptor, "rb") as handle:
        return handle.read() if stat.S_ISREG(os.fstat(descriptor).st_mode) else None


class ScoreJournal:
    """Append-only JSON lines `{"q": id, "docs": [...], "scores": [...], ...notes}`, one per query."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None
        self.entries_written = 0

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def discard_other_process_counts(self, world: int) -> None:
        """(`--fresh`, once per run) The same key's journals of runs with another number of
        processes, which a later run without `--fresh` would read as siblings; this run's other
        ranks discard their own. One that cannot be removed is left (and read again later)."""
        this_run = re.compile(rf"\.rank\d+-of-{world}\.jsonl$") if world > 1 else None
        for sibling in sibling_journals(self.path):
            if this_run is None or not this_run.search(sibling.name):
                with contextlib.suppress(OSError):
                    sibling.unlink()

    def load(self, expected_docs: dict[str, Sequence[str]], siblings: bool = True) -> dict[str, ScoredQuery]:
        """Valid entries of this journal (and, read only, of its siblings) matching `expected_docs`.

        A line cut short by a crash is expected and dropped quietly (a line break closes a last
        one, so the next entry starts a line of its own, and the next load still knows it for
        what it is); any other unreadable line is reported with its number, and the journal is
        then rewritten with its kept entries. A journal holding nothing else to drop is left as it
        is: another command sharing the cache may be appending to it (a rewrite puts a new file at
        the path: lines that command appends meanwhile go to the old one and are scored again).
        """
        with contextlib.suppress(OSError):  # what rewrites killed before their rename left
            remove_dead_temporaries(self.path.parent)
        kept: dict[str, ScoredQuery] = {}
        for sibling in sibling_journals(self.path) if siblings else []:
            kept.update(self._read(sibling, expected_docs)[0])
        own, damaged, torn = self._read(self.path, expected_docs)
        if damaged:
            self._rewrite(own, expected_docs)
        elif torn:
            self._write(b"\n", "its scored queries are kept")
        return {**kept, **own}

    def _read(
        self, path: Path, expected_docs: dict[str, Sequence[str]]
    ) -> tuple[dict[str, ScoredQuery], bool, bool]:
        """The entries, whether lines other than cut-short ones were unreadable or stale, and
        whether the file ends in the middle of a line."""
        raw = _file_bytes(path)
        if raw is None:  # what a user sharing the cache could put there: never read or written through
            warn(f"journal {path} is not a file; its queries are scored again")
            return {}, True, False
        lines = raw.split(b"\n")
        kept: dict[str, ScoredQuery] = {}
        damaged = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            entry = self._parse(line, expected_docs)
            if entry is None:
                # a record whose write a crash cut short (every record is one JSON object) is not
                # damage, at the end or closed by the line break a later load added
                if not (line.startswith(b"{") and not line.rstrip().endswith(b"}")):
                    damaged.append(number)
                continue
            kept[entry[0]] = entry[1]
        if damaged:
            warn(
                f"journal {path} has {len(damaged)} unreadable or stale lines "
                f"(first: line {damaged[0]}); those queries are scored again"
            )
        return kept, bool(damaged), bool(lines[-1])

    @staticmethod
    def _parse(line: bytes, expected_docs: dict[str, Sequence[str]]) -> tuple[str, ScoredQuery] | None:
        try:
            record = json.loads(line)
            query_id, docs, scores = record["q"], record["docs"], record["scores"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        notes = {k: v for k, v in record.items() if k not in RECORD_KEYS}
        blocks = notes.get("blocks", [])
        if not isinstance(blocks, list) or not all(is_positive_integer(n) for n in blocks):
            return None
        if not isinstance(query_id, str) or not isinstance(scores, list):
            return None
        if list(expected_docs.get(query_id, ())) != docs or len(scores) != len(docs):
            return None
        # finite numbers only (JSON's true/false and "0.5" are not scores)
        if not all(is_kind(s, float) for s in scores):
            return None
        return query_id, ScoredQuery(np.asarray(scores, dtype=np.float64), notes)

    def _rewrite(self, kept: dict[str, ScoredQuery], expected_docs: dict[str, Sequence[str]]) -> None:
        temporary = None  # (commands sharing a cache may rewrite one journal at once)
        try:
            temporary, handle = open_own_temporary(self.path, "w", encoding="utf-8")
            with handle:
                for query_id, scored in kept.items():
                    handle.write(self._line(query_id, expected_docs[query_id], scored))
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
        except OSError as exc:
            if temporary is not None:
                temporary.unlink(missing_ok=True)
            raise disk_error(exc, self.path, "it is left as it was") from None

    @staticmethod
    def _line(query_id: str, docs: Sequence[str], scored: ScoredQuery) -> str:
        scores = [float(s) for s in scored.scores]
        record = {**scored.notes, "q": query_id, "docs": list(docs), "scores": scores}
        return json.dumps(record, ensure_ascii=False) + "\n"

    def append(self, entries: list[tuple[str, Sequence[str], ScoredQuery]]) -> None:
        """Write, flush and sync a batch of scored queries."""
        kept = f"{self.entries_written} scored queries are kept"
        self._write("".join(self._line(q, d, s) for q, d, s in entries).encode("utf-8"), kept)
        self.entries_written += len(entries)

    def _write(self, data: bytes, kept: str) -> None:
        """Append to the file now at the path: where another command sharing the cache rewrote the
        journal since this one opened it, appending to the old, unlinked file would lose the lines."""
        try:
            if self._handle is not None and not self._holds_the_path():
                self.close()
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                appending = os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW
                self._handle = os.fdopen(os.open(self.path, appending, 0o666), "ab")
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise disk_error(exc, self.path, kept) from None

    def _holds_the_path(self) -> bool:
        assert self._handle is not None
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._handle.fileno())
        return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
