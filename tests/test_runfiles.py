"""TREC run reading and the ranking rules that keep trec_eval from reordering documents."""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import pytest

from rerank_eval.errors import UserError
from rerank_eval.pipeline.plan import CandidateOrder
from rerank_eval.pipeline.score import strictly_decreasing
from rerank_eval.runfiles import format_run_lines, read_run, run_tag, trec_order


def test_reads_run_and_keeps_first_of_duplicates(tmp_path):
    path = tmp_path / "r.trec"
    path.write_text("q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.5 t\n\nq1 Q0 d1 3 0.5 t\nq2 Q0 d9 1 -1e3 t\n")
    parsed = read_run(path)
    assert parsed.run == {"q1": {"d1": 2.5, "d2": 1.5}, "q2": {"d9": -1000.0}}
    assert parsed.duplicate_lines == 1


def test_a_byte_order_mark_is_not_part_of_the_first_query_id(tmp_path):
    path = tmp_path / "bom.trec"
    path.write_bytes("\ufeffq1 Q0 d1 1 2.5 t\r\nq1 Q0 d2 2 1.5 t\r\n".encode())
    assert read_run(path).run == {"q1": {"d1": 2.5, "d2": 1.5}}


def test_the_hash_is_of_every_byte_of_the_file(tmp_path):
    path = tmp_path / "r.trec"
    content = "\ufeffq1 Q0 d1 1 2.5 t\r\n\n  \nq1 Q0 d2 2 1.5 t".encode()  # no final line end
    path.write_bytes(content)
    parsed = read_run(path)
    assert parsed.sha256 == hashlib.sha256(content).hexdigest()
    assert parsed.run == {"q1": {"d1": 2.5, "d2": 1.5}}


def test_a_line_too_long_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    from rerank_eval import textlines

    monkeypatch.setattr(textlines, "MAX_LINE_BYTES", 64)
    path = tmp_path / "long.trec"
    path.write_bytes(b"q1 Q0 d1 1 2.5 t\n" + b"q" * 10_000 + b" Q0 d2 2 1.5 t\n")
    with pytest.raises(UserError, match=r"long\.trec, line 2: longer than") as error:
        read_run(path)
    assert "\n" not in str(error.value)


def test_a_run_of_more_documents_than_memory_holds_is_refused_as_it_is_read(tmp_path, monkeypatch):
    """Millions of lines once filled memory (about 110 bytes each as read) and ended in a
    MemoryError traceback or the kernel's kill: whether in one query or spread over many, a run
    past the limit is refused at the line that passes it, and duplicates do not count towards it."""
    from rerank_eval import runfiles

    monkeypatch.setattr(runfiles, "MAX_RUN_DOCUMENTS", 6)
    path = tmp_path / "deep.trec"
    lines = [f"q1 Q0 d{i} {i} {10 - i} t" for i in range(1, 4)] + ["q1 Q0 d2 9 0.5 t"]
    lines += [f"q2 Q0 d{i} {i} {10 - i} t" for i in range(1, 4)]
    path.write_text("\n".join(lines) + "\n")
    parsed = read_run(path)  # six in all, one duplicate: at the limit, not past it
    assert {q: len(docs) for q, docs in parsed.run.items()} == {"q1": 3, "q2": 3}
    assert parsed.duplicate_lines == 1
    for extra in ("q1 Q0 d4 10 0.1 t", "q3 Q0 d1 1 0.1 t"):  # one query deeper, or one query more
        path.write_text("\n".join([*lines, extra]) + "\n")
        with pytest.raises(UserError) as error:
            read_run(path)
        assert str(error.value) == (
            f"{path}, line 8: the run holds more than 6 documents; keep each query's top results only "
            "(the top 1,000 is plenty for a top-k of 100)"
        )


def test_a_run_of_more_queries_than_any_benchmark_is_refused_as_it_is_read(tmp_path, monkeypatch):
    """Five million queries of one document each took 2.2 GB (each query costs more than its
    line); the query past the limit is refused at its line."""
    from rerank_eval import runfiles

    monkeypatch.setattr(runfiles, "MAX_RUN_QUERIES", 2)
    path = tmp_path / "wide.trec"
    path.write_text("q1 Q0 d1 1 2 t\nq2 Q0 d1 1 2 t\nq1 Q0 d2 2 1 t\n")
    assert sorted(read_run(path).run) == ["q1", "q2"]  # at the limit, not past it
    path.write_text("q1 Q0 d1 1 2 t\nq2 Q0 d1 1 2 t\nq1 Q0 d2 2 1 t\nq3 Q0 d1 1 2 t\n")
    with pytest.raises(UserError) as error:
        read_run(path)
    assert str(error.value) == (
        f"{path}, line 4: the run holds more than 2 queries; keep the queries of the datasets it is for"
    )


def test_a_run_that_fills_memory_is_one_line(tmp_path, monkeypatch):
    from rerank_eval import runfiles

    path = tmp_path / "big.trec"
    path.write_text("q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.5 t\n")

    def exhausted(line: str) -> list[str]:
        raise MemoryError

    monkeypatch.setattr(runfiles, "trec_fields", exhausted)
    with pytest.raises(UserError) as error:
        read_run(path)
    assert str(error.value) == (
        f"run file {path} does not fit in memory; keep each query's top results only (the top 1,000 "
        "is plenty for a top-k of 100)"
    )


def test_a_run_of_long_document_ids_is_refused_before_they_fill_memory(tmp_path, monkeypatch):
    """The document cap bounds memory only where ids are short: 100,000 lines of 20 KB ids held 2.3 GB."""
    from rerank_eval import runfiles

    monkeypatch.setattr(runfiles, "MAX_RUN_ID_CHARACTERS", 25)
    path = tmp_path / "long-ids.trec"
    path.write_text("".join(f"q1 Q0 {'d' * 10}{i} {i + 1} 1.0 t\n" for i in range(3)))
    with pytest.raises(UserError) as error:
        read_run(path)
    assert str(error.value) == (
        f"{path}, line 3: the run's ids hold more than 25 characters; keep each query's top "
        "results only (the top 1,000 is plenty for a top-k of 100)"
    )
    monkeypatch.setattr(runfiles, "MAX_RUN_ID_CHARACTERS", 35)  # (as many as it holds, q1 too: read)
    assert len(read_run(path).run["q1"]) == 3
    long_queries = tmp_path / "long-query-ids.trec"  # query ids count too
    long_queries.write_text("".join(f"{'q' * 20}{i} Q0 d {i + 1} 1.0 t\n" for i in range(2)))
    with pytest.raises(UserError, match=r", line 2: the run's ids hold more than 35 characters"):
        read_run(long_queries)


def test_a_run_that_fills_memory_lets_go_of_what_was_read_before_its_error_is_raised(tmp_path, monkeypatch):
    """The MemoryError's traceback holds the reading frames and what they read: kept as the one-line
    error's context, it was held while the run cleaned up, whose removal of the result folder then
    failed for want of memory (and said nothing)."""
    import weakref

    from rerank_eval import runfiles

    path = tmp_path / "big.trec"
    path.write_text("q1 Q0 d1 1 2.5 t\n")

    class Documents(dict):
        pass

    held = []

    def exhausted(path):
        run = {"q1": Documents(d1=2.5)}  # what the reading frame holds when memory runs out
        held.append(weakref.ref(run["q1"]))
        raise MemoryError

    monkeypatch.setattr(runfiles, "_read_lines", exhausted)
    with pytest.raises(UserError) as error:
        read_run(path)
    assert error.value.__context__ is None and held[0]() is None


def test_a_result_folder_that_cannot_be_removed_is_said(tmp_path, monkeypatch, capsys):
    from rerank_eval.results import folder as folder_module

    writer = folder_module.ResultWriter(tmp_path / "out")
    writer.add_run("x", ["q1 Q0 d1 1 2.5 t\n"])
    monkeypatch.setattr(folder_module.shutil, "rmtree", lambda path, ignore_errors=False: None)
    writer.abort()
    assert capsys.readouterr().err == (
        f"warning: could not remove {tmp_path / 'out.incomplete'}, which holds this run's unfinished "
        "result; remove it\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"q1 Q0 d1 1 2.5\n", "line 1: expected 6 fields"),
        (b"q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 abc t\n", "line 2: score 'abc' is not a number"),
        (b"q1 Q0 d1 1 nan t\n", "line 1: score 'nan' is not finite"),
        (b"q1 Q0 d1 1 1.0 t\nq1 Q0 \xff 2 0.5 t\n", "line 2: not valid UTF-8"),
        (b"\n\n", "has no run lines"),
    ],
)
def test_malformed_runs_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.trec"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as error:
        read_run(path)
    assert str(path) in str(error.value)


def test_trec_order_breaks_ties_by_doc_id_descending():
    assert [d for d, _ in trec_order({"a": 1.0, "b": 1.0, "c": 2.0, "aa": 1.0})] == ["c", "b", "aa", "a"]


def test_strictly_decreasing_keeps_input_order_on_ties():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1], dtype=np.float32)
    order, written, ties = strictly_decreasing(scores)
    assert order == [1, 0, 2, 3, 4]
    assert all(a > b for a, b in itertools.pairwise(written))
    assert ties == 2
    assert written[1] == float(np.float32(0.5)) and written[2] == math.nextafter(written[1], -math.inf)


def test_candidate_orders():
    assert CandidateOrder.parse("first-stage").positions("q", 4) == [0, 1, 2, 3]
    assert CandidateOrder.parse("reversed").positions("q", 4) == [3, 2, 1, 0]
    shuffled = CandidateOrder.parse("shuffled:7")
    assert sorted(shuffled.positions("q", 20)) == list(range(20))
    assert shuffled.positions("q", 20) == CandidateOrder.parse("shuffled:7").positions("q", 20)
    assert shuffled.positions("q", 20) != shuffled.positions("other", 20)
    # seed and query id are kept apart: seed 1 on query 23 is not seed 12 on query 3
    assert CandidateOrder.parse("shuffled:1").positions("23", 20) != CandidateOrder.parse(
        "shuffled:12"
    ).positions("3", 20)
    assert str(shuffled) == "shuffled:7"
    with pytest.raises(UserError):
        CandidateOrder.parse("shuffled:x")
    # a seed as long as a 64-bit one is a seed; a number alone is not an order
    assert CandidateOrder.parse(f"shuffled:{2**64 - 1}").seed == 2**64 - 1
    with pytest.raises(UserError, match="unknown candidate order '7'"):
        CandidateOrder.parse("7")


def test_run_lines_refuse_ids_that_would_split_them():
    """Whatever reaches the writer (ir_datasets' ids are not checked on the way in), a line that
    would not read back as six fields is never written."""
    from rerank_eval.runfiles import format_run_lines

    ranked = iter([("d1", 2.0), ("d2", 1.5)])  # an iterator: read once for the check, once for lines
    assert format_run_lines("q1", ranked, "t") == ["q1 Q0 d1 1 2.0 t\n", "q1 Q0 d2 2 1.5 t\n"]
    for query, doc in (("q 1", "d1"), ("q1", "d\t2"), ("q1", "d\x002")):
        with pytest.raises(UserError, match="holds whitespace or a control character"):
            format_run_lines(query, [(doc, 1.0)], "t")


@pytest.mark.parametrize("score", ["1_000", "５", "0x1p3", "1e", "--1"])
def test_scores_are_read_as_trec_eval_reads_them_or_refused(score, tmp_path):
    """Python's float() takes "1_000" and other scripts' digits, which trec_eval's strtod reads
    otherwise (1, 0): such a score is refused, never read another way than trec_eval's."""
    path = tmp_path / "run.trec"
    path.write_text(f"q1 Q0 d1 1 {score} t\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"line 1: score '{score}' is not a number"):
        read_run(path)
    path.write_text("q1 Q0 d1 1 -1.5e+3 t\nq1 Q0 d2 2 .5 t\nq1 Q0 d3 3 7. t\n")
    assert read_run(path).run == {"q1": {"d1": -1500.0, "d2": 0.5, "d3": 7.0}}


def test_a_run_file_id_with_a_control_character_is_refused(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text("q1 Q0 d\x011 1 2.0 t\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 1: id 'd\\x011' holds whitespace or a control character"):
        read_run(path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # str.split() would split at each of these and read 6 fields; trec_eval splits at none
        ("q1\u00a0Q0 d1 1 2.0 t x\n", r"line 1: id 'q1\\xa0Q0' holds whitespace"),
        ("q1 Q0 d\x1c1 1 2.0 t\n", r"line 1: id 'd\\x1c1' holds whitespace or a control character"),
        ("q1 Q0 d\u20281 1 2.0 t\n", r"line 1: id 'd\\u20281' holds whitespace"),
    ],
)
def test_fields_are_split_where_trec_eval_splits_them(tmp_path, line, message):
    path = tmp_path / "run.trec"
    path.write_text(line, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_run(path)
    path.write_text("q1\tQ0 d1\v1\f2.0\rt\n", encoding="utf-8")  # C's isspace: tab, VT, FF, CR
    assert read_run(path).run == {"q1": {"d1": 2.0}}


def test_grades_are_read_as_trec_eval_reads_them():
    from rerank_eval.runfiles import trec_fields, trec_grade

    assert [trec_grade(t) for t in ("2147483647", "-0000000000000000000001", "+3", "007")] == [
        2**31 - 1,
        -1,
        3,
        7,
    ]
    assert [trec_grade(t) for t in ("1_0", "\u0661", "1.0", "", "1\u00a0")] == [None] * 5
    assert abs(trec_grade("9" * 5000)) >= 2**31 and trec_grade("-" + "9" * 19) < -(2**31)
    # a non-ASCII id and a trailing tab or no-break space: split as trec_eval splits, nothing dropped
    assert trec_fields("q1 0 caf\u00e9 1\t") == ["q1", "0", "caf\u00e9", "1"]
    assert trec_fields("q1 0 d2 1\u00a0") == ["q1", "0", "d2", "1\u00a0"]


def test_a_names_whitespace_becomes_underscores_in_the_run_tag_and_its_slashes_stay(tmp_path):
    """The tag is a TREC line's last field: a space would add a seventh."""
    tag = run_tag("org/my model\u00a0v2\u2028")
    assert tag == "org/my_model_v2_"
    path = tmp_path / "run.trec"
    path.write_text("".join(format_run_lines("q1", [("d1", 2.0), ("d2", 1.0)], tag)), encoding="utf-8")
    assert read_run(path).run == {"q1": {"d1": 2.0, "d2": 1.0}}
