"""TREC run files: strict reading (errors name file and line) and writing.

A run maps query id -> {doc id: score}. trec_eval ignores the rank column and orders each query by
score, breaking ties by doc id in descending order; `trec_order` reproduces that order so that
every top-k cut and every candidate list agrees with how the metric sees the run.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rerank_eval.errors import UserError, read_within_memory
from rerank_eval.paths import refuse_special_file
from rerank_eval.textlines import CONTROL_CHARACTERS, numbered_lines

Run = dict[str, dict[str, float]]

#: a score as C's strtod reads it in trec_eval, in ASCII digits (Python's float() would also take
#: "1_000" and other scripts' digits, which trec_eval reads otherwise)
DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
#: what a query or document id of a TREC file cannot hold: its fields are split on whitespace, and
#: no id holds a control character
_NOT_IN_AN_ID = re.compile(r"\s|" + CONTROL_CHARACTERS.pattern)
#: what separates the fields of a TREC line: C's isspace, as trec_eval reads them
_TREC_SPACE = re.compile(r"[ \t\n\v\f\r]+")
#: characters Python's str.split() splits on and trec_eval does not (no-break spaces, U+2028,
#: \x1c-\x1f), or that an id cannot hold: a line with none is split the fast way
_UNUSUAL = re.compile(r"[^\x20-\x7e\t\n\v\f\r]")
#: the most (query, document) lines a run file may hold, about 2 GB in memory as it is read (some
#: 110 bytes each): a first stage's top-k is read from it, and the deepest run a benchmark here
#: needs is Quora's top-1,000 of 10,000 queries; a file past it would fill memory before its end
MAX_RUN_DOCUMENTS = 20_000_000
#: the most characters of query and document ids a run file may hold (each id is kept as read): the
#: document cap bounds memory only where ids are short, and 100,000 lines of 20 KB ids held 2.3 GB;
#: at the document cap this leaves ids 53 characters on average, BEIR's and MIRACL's are under 40
MAX_RUN_ID_CHARACTERS = 2**30
#: the most queries a run file may hold (each costs some 250 bytes more as it is read): no
#: benchmark here judges more than a few tens of thousands
MAX_RUN_QUERIES = 1_000_000
#: an integer grade as trec_eval reads it, in ASCII digits (int() would take "1_0" and other
#: scripts' digits)
INTEGER = re.compile(r"[+-]?[0-9]+")


def typed_number(text: str) -> int | float | None:
    """A setting's value typed on the command line as a number: an int or a float written in
    ASCII digits (at most 64 characters), else None. Python's int() and float() would also take
    "1_000", other scripts' digits, "nan" and "inf"."""
    text = text.strip()
    if len(text) > 64:
        return None
    if INTEGER.fullmatch(text):
        return int(text)
    return float(text) if DECIMAL.fullmatch(text) else None


def trec_fields(line: str) -> list[str]:
    """The whitespace-separated fields of a TREC run or qrels line, split where trec_eval splits
    them, so that a no-break space stays inside its field (where `id_problem` finds it)."""
    if not _UNUSUAL.search(line):
        return line.split()
    return [field for field in _TREC_SPACE.split(line) if field]


def trec_grade(text: str) -> int | None:
    """A qrels grade, or None where `text` is not an integer trec_eval would read the same; one of
    more than 18 digits as ±2**63, beyond every grade (int() reads no more than 4,300 digits)."""
    if not INTEGER.fullmatch(text):
        return None
    if len(text.lstrip("+-").lstrip("0")) > 18:
        return -(2**63) if text.startswith("-") else 2**63
    return int(text)


def id_problem(identifier: str) -> str | None:
    """Why `identifier` cannot be a query or document id in a TREC run or qrels file (None when it
    can): whitespace or a control character would split or end its line there."""
    if _NOT_IN_AN_ID.search(identifier):
        return f"id {identifier!r} holds whitespace or a control character, which TREC files cannot"[:300]
    return None


@dataclass
class RunFile:
    path: Path
    run: Run
    sha256: str
    duplicate_lines: int  # repeated (query, doc) pairs; the first occurrence is kept


def read_run(path: Path) -> RunFile:
    """Parse `qid Q0 docid rank score tag` lines; any malformed line is a one-line error. The file
    is read line by line and hashed in the same pass (no line over `textlines.MAX_LINE_BYTES`, no
    more than MAX_RUN_DOCUMENTS documents or MAX_RUN_QUERIES queries, and one that fills memory
    anyway said in one line)."""
    path = Path(path)
    refuse_special_file(path, f"run file {path}")
    run, duplicates, sha256 = read_within_memory(
        lambda: _read_lines(path),
        f"run file {path} does not fit in memory; keep each query's top results only (the top 1,000 "
        f"is plenty for a top-k of 100)",
    )
    if not run:
        raise UserError(f"run file {path} has no run lines")
    return RunFile(path=path, run=run, sha256=sha256, duplicate_lines=duplicates)


def _read_lines(path: Path) -> tuple[Run, int, str]:
    """The run of the file's lines, the count of duplicate lines and the file's SHA-256 (what it
    reads is held by this frame alone, so that running out of memory lets go of all of it)."""
    run: Run = {}
    digest = hashlib.sha256()
    duplicates = 0
    documents = id_characters = 0
    # (a byte-order mark, which editors on Windows write, is not part of the first query id)
    for number, line in numbered_lines(path, digest):
        fields = trec_fields(line)
        if len(fields) != 6:
            raise UserError(
                f"{path}, line {number}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}"
            )
        query_id, _, doc_id, _, score_text, _ = fields
        if not (query_id + doc_id).isprintable():  # (the common case tested fast; then exactly)
            problem = id_problem(query_id) or id_problem(doc_id)
            if problem:
                raise UserError(f"{path}, line {number}: {problem}")
        non_finite = score_text.lower().lstrip("+-") in ("inf", "infinity", "nan")  # refused below
        if not (DECIMAL.fullmatch(score_text) or non_finite):
            raise UserError(f"{path}, line {number}: score {score_text!r} is not a number")
        score = float(score_text)
        if not math.isfinite(score):
            raise UserError(f"{path}, line {number}: score {score_text!r} is not finite")
        docs = run.get(query_id)
        if docs is None:
            if len(run) == MAX_RUN_QUERIES:
                raise UserError(
                    f"{path}, line {number}: the run holds more than {MAX_RUN_QUERIES:,} queries; keep "
                    f"the queries of the datasets it is for"
                )
            docs = run[query_id] = {}
            id_characters += len(query_id)
        if doc_id in docs:
            duplicates += 1
            continue
        if documents == MAX_RUN_DOCUMENTS:
            raise UserError(
                f"{path}, line {number}: the run holds more than {MAX_RUN_DOCUMENTS:,} documents; keep "
                f"each query's top results only (the top 1,000 is plenty for a top-k of 100)"
            )
        id_characters += len(doc_id)
        if id_characters > MAX_RUN_ID_CHARACTERS:
            raise UserError(
                f"{path}, line {number}: the run's ids hold more than {MAX_RUN_ID_CHARACTERS:,} "
                f"characters; keep each query's top results only (the top 1,000 is plenty for a top-k of 100)"
            )
        docs[doc_id] = score
        documents += 1
    return run, duplicates, digest.hexdigest()


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """(doc id, score) pairs in trec_eval's order: score descending, ties by doc id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def run_tag(name: str) -> str:
    """A TREC run's last field from a model's or first stage's name: whatever would split or end
    its line becomes `_` (a Hub id keeps its `/`)."""
    return _NOT_IN_AN_ID.sub("_", name)


def format_run_lines(query_id: str, ranked: Iterable[tuple[str, float]], tag: str) -> list[str]:
    """TREC lines for one query, ranks from 1; `repr` keeps every float's exact value. An id that
    would split its line is refused (the datasets' readers refuse them first, naming the line)."""
    ranked = list(ranked)
    problem = next(filter(None, map(id_problem, (query_id, *(doc_id for doc_id, _ in ranked)))), None)
    if problem:
        raise UserError(f"cannot write a run line of query {query_id!r}: {problem}"[:400])
    return [
        f"{query_id} Q0 {doc_id} {rank} {score!r} {tag}\n"
        for rank, (doc_id, score) in enumerate(ranked, start=1)
    ]
