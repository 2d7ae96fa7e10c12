"""Strict, streaming readers of the files a local dataset is made of.

The formats are BEIR's (`corpus.jsonl`, `queries.jsonl`, `qrels/SPLIT.tsv`) and their common plain
variants: TSV corpora and queries (MS MARCO's `id<TAB>text`) and TREC qrels (`query 0 doc grade`).
Files may come from anyone, so every line is checked: a malformed one is a one-line error naming
the file and the line; lines are read one at a time, none longer than `textlines.MAX_LINE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rerank_eval.errors import UserError
from rerank_eval.paths import refuse_special_file
from rerank_eval.runfiles import id_problem, trec_fields, trec_grade
from rerank_eval.textlines import JsonLineError, json_line, numbered_lines
from rerank_eval.typed import is_kind

#: BEIR's qrels header line
BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")
#: the most queries and judgements a local dataset's files may hold (each costs memory as it is
#: read; MS MARCO's training queries are 808,731): a file past them is no benchmark's
MAX_QUERIES = 2_000_000
MAX_JUDGEMENTS = 20_000_000
#: how these readers turn files into documents, queries and judgements; part of every key built
#: from a local dataset (a change of reading is never mistaken for the files read before)
LOCAL_FORMAT = 1


class LocalDoc(NamedTuple):
    """A document as ir_datasets' doc store keeps it (module level, so that it pickles)."""

    doc_id: str
    title: str
    text: str


def check_readable(role: str, path: Path) -> None:
    """A regular file that exists (a FIFO would block forever, a device never end)."""
    refuse_special_file(path, f"{role} file {path}")
    if not path.is_file():
        raise UserError(f"{role} file not found: {path}")


def is_jsonl(path: Path) -> bool:
    """JSON lines by name (`.jsonl`, `.json`); anything else is read as tab-separated."""
    return path.suffix.lower() in (".jsonl", ".json")


def _json_object(path: Path, number: int, line: str, fields: tuple[str, ...]) -> dict[str, Any]:
    try:
        value = json_line(line)
    except JsonLineError as exc:
        raise UserError(f"{path}, line {number}: {exc}") from None
    if not isinstance(value, dict) or any(f not in value for f in fields):
        names = ", ".join(f'"{f}"' for f in fields)
        raise UserError(f"{path}, line {number}: expected a JSON object with {names}")
    for name in ("_id", "title", "text"):
        item = value.get(name)
        if item is None and name == "title":  # BEIR writes no title, an empty one or null
            continue
        # an id may be a JSON number (some corpora write them so); a text never is
        number_allowed = name == "_id" and is_kind(item, int)
        if name in value and not (is_kind(item, str) or number_allowed):
            raise UserError(f'{path}, line {number}: "{name}" should be a string, not {item!r}'[:200])
    if not str(value["_id"]).strip():
        raise UserError(f'{path}, line {number}: the "_id" is empty')
    problem = id_problem(str(value["_id"]))
    if problem:
        raise UserError(f"{path}, line {number}: {problem}")
    return value


def _columns(path: Path, number: int, line: str, counts: tuple[int, ...], names: str) -> list[str]:
    columns = line.split("\t")
    if len(columns) not in counts or not columns[0].strip():
        raise UserError(
            f"{path}, line {number}: expected {' or '.join(map(str, counts))} tab-separated columns "
            f"({names}), got {len(columns)}" + ("" if columns[0].strip() else " with an empty id")
        )
    problem = id_problem(columns[0])
    if problem:
        raise UserError(f"{path}, line {number}: {problem}")
    return columns


def read_documents(path: Path) -> Iterator[tuple[int, LocalDoc]]:
    """(line number, document) of a corpus: BEIR JSON lines (`_id`, `text`, optional `title`) or
    TSV (`id<TAB>text` or `id<TAB>title<TAB>text`)."""
    for number, line in numbered_lines(path):
        if is_jsonl(path):
            value = _json_object(path, number, line, ("_id", "text"))
            yield number, LocalDoc(str(value["_id"]), str(value.get("title") or ""), str(value["text"]))
        else:
            columns = _columns(path, number, line, (2, 3), "id, [title,] text")
            title = columns[1] if len(columns) == 3 else ""
            yield number, LocalDoc(columns[0], title, columns[-1])


def read_queries(path: Path, judged: Collection[str]) -> dict[str, str]:
    """Query id -> text: BEIR JSON lines (`_id`, `text`) or TSV (`id<TAB>text`); an id given twice
    is refused (which text was meant?), and so is a `judged` query without text (the file may hold
    other splits' queries, which are not checked for it)."""
    queries: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in numbered_lines(path):
        if is_jsonl(path):
            value = _json_object(path, number, line, ("_id", "text"))
            query_id, text = str(value["_id"]), str(value["text"])
        else:
            query_id, text = _columns(path, number, line, (2,), "id, text")
        if not text.strip() and query_id in judged:  # it would retrieve nothing and score 0 silently
            raise UserError(f"{path}, line {number}: query {query_id!r} has no text")
        if query_id in queries:
            first = lines[query_id]
            raise UserError(f"{path}, line {number}: query {query_id!r} again (first on line {first})")
        if len(queries) == MAX_QUERIES:
            raise UserError(f"{path}, line {number}: more than {MAX_QUERIES:,} queries")
        queries[query_id], lines[query_id] = text, number
    if not queries:
        raise UserError(f"queries file {path} has no queries")
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Query id -> {doc id: grade}: TREC qrels (`query iteration doc grade`) or BEIR's TSV with its
    `query-id corpus-id score` header; a (query, doc) pair judged twice is refused."""
    qrels: dict[str, dict[str, int]] = {}
    beir = False
    judgements = 0
    for number, line in numbered_lines(path):
        fields = trec_fields(line)
        if not qrels and not beir and tuple(fields) == BEIR_QRELS_HEADER:
            beir = True
            continue
        expected = 3 if beir else 4
        if len(fields) != expected:
            layout = "query-id corpus-id score" if beir else "query iteration doc grade"
            got = len(fields)
            if not beir and got == 3:  # BEIR's layout, its header missing
                raise UserError(
                    f"{path}, line {number}: expected 4 fields 'query iteration doc grade' (TREC), or "
                    "BEIR's with its header line 'query-id corpus-id score' first, got 3"
                )
            raise UserError(f"{path}, line {number}: expected {expected} fields '{layout}', got {got}")
        query_id, doc_id, grade_text = fields[0], fields[-2], fields[-1]
        problem = id_problem(query_id) or id_problem(doc_id)
        if problem:
            raise UserError(f"{path}, line {number}: {problem}")
        grade = trec_grade(grade_text)
        if grade is None:
            raise UserError(f"{path}, line {number}: grade {grade_text!r} is not an integer"[:200])
        if abs(grade) >= 2**31:  # trec_eval and ir_measures hold grades in C ints
            shown = (
                grade_text if len(grade_text) <= 24 else f"{grade_text[:20]}... ({len(grade_text):,} digits)"
            )
            raise UserError(f"{path}, line {number}: grade {shown} is out of range")
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged:
            raise UserError(f"{path}, line {number}: query {query_id!r}, document {doc_id!r} judged again")
        if judgements == MAX_JUDGEMENTS:
            raise UserError(f"{path}, line {number}: more than {MAX_JUDGEMENTS:,} judgements")
        judged[doc_id] = grade
        judgements += 1
    if not qrels:
        raise UserError(f"qrels file {path} has no judgements")
    return qrels
