"""TREC run files: strict reading (errors name file and line) and writing.

A run maps query id -> {doc id: score}. trec_eval ignores the rank column and orders each query by
score, breaking ties by doc id in descending order; `trec_order` reproduces that order so that
every top-k cut and every candidate list agrees with how the metric sees the run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rerank_eval.errors import UserError
from rerank_eval.paths import special_file_kind
from rerank_eval.textlines import numbered_lines

Run = dict[str, dict[str, float]]


@dataclass
class RunFile:
    path: Path
    run: Run
    sha256: str
    duplicate_lines: int  # repeated (query, doc) pairs; the first occurrence is kept


def read_run(path: Path) -> RunFile:
    """Parse `qid Q0 docid rank score tag` lines; any malformed line is a one-line error. The file
    is read line by line and hashed in the same pass (no line over `textlines.MAX_LINE_BYTES`)."""
    path = Path(path)
    kind = special_file_kind(path)
    if kind:  # a FIFO would block the read forever, a directory fail obscurely
        raise UserError(f"run file {path} is {kind}, not a file")
    digest = hashlib.sha256()
    run: Run = {}
    duplicates = 0
    # (a byte-order mark, which editors on Windows write, is not part of the first query id)
    for number, line in numbered_lines(path, digest):
        fields = line.split()
        if len(fields) != 6:
            raise UserError(
                f"{path}, line {number}: expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}"
            )
        query_id, _, doc_id, _, score_text, _ = fields
        try:
            score = float(score_text)
        except ValueError:
            raise UserError(f"{path}, line {number}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise UserError(f"{path}, line {number}: score {score_text!r} is not finite")
        docs = run.setdefault(query_id, {})
        if doc_id in docs:
            duplicates += 1
            continue
        docs[doc_id] = score
    if not run:
        raise UserError(f"run file {path} has no run lines")
    return RunFile(path=path, run=run, sha256=digest.hexdigest(), duplicate_lines=duplicates)


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """(doc id, score) pairs in trec_eval's order: score descending, ties by doc id descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def format_run_lines(query_id: str, ranked: Iterable[tuple[str, float]], tag: str) -> list[str]:
    """TREC lines for one query, ranks from 1; `repr` keeps every float's exact value."""
    return [
        f"{query_id} Q0 {doc_id} {rank} {score!r} {tag}\n"
        for rank, (doc_id, score) in enumerate(ranked, start=1)
    ]
