"""Rules for the numbers a local dataset's files move, pinned where a mutation round found them
unpinned: which ids and fields a corpus may give, a repeated id wherever its hash sorts, the corpus
size the memory check reads, the files' content key, and a document store built only in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.datasets.local import LocalDataset
from rerank_eval.errors import UserError
from tests.builders import write_local_entry

QUERIES = '{"_id": "q1", "text": "fox"}\n'
QRELS = "q1 0 d1 1\n"


def local_dataset(folder: Path, corpus: str, queries: str = QUERIES, qrels: str = QRELS,
                  names: tuple[str, str, str] = ("c.jsonl", "q.jsonl", "r.txt")) -> LocalDataset:  # fmt: skip
    """The dataset of one entry naming these three files, written into `folder`."""
    (spec,) = load_config(write_local_entry(folder, corpus, queries, qrels, names)).suite("bad").datasets
    return LocalDataset(spec)


def test_a_null_title_and_a_number_id_are_read_as_beir_writes_them(tmp_path):
    """BEIR's corpora write a missing title as null and some write ids as JSON numbers: both are
    read (the title empty, the id as its text, so qrels and runs naming "12" find it)."""
    corpus = '{"_id": 12, "title": null, "text": "red fox"}\n{"_id": "d1", "text": "fox"}\n'
    queries = '{"_id": 7, "text": "fox"}\n'
    dataset = local_dataset(tmp_path, corpus, queries, "7 0 12 2\n7 0 d1 0\n")
    assert list(dataset.iter_fields()) == [("12", "", "red fox"), ("d1", "", "fox")]
    assert dataset.queries() == {"7": "fox"}
    assert dataset.qrels() == {"7": {"12": 2, "d1": 0}}
    assert dataset.documents(["12", "absent"]) == {"12": "red fox"}


def test_a_two_column_tsv_corpus_has_no_title_and_a_three_column_one_has(tmp_path):
    """MS MARCO's `id<TAB>text`: the text is the document, once (taken as a title too, each
    document's text would be doubled and every score shifted); `id<TAB>title<TAB>text` has both."""
    names = ("c.tsv", "q.tsv", "r.txt")
    plain = local_dataset(tmp_path, "d1\tred fox\n", "q1\tfox\n", names=names)
    assert list(plain.iter_fields()) == [("d1", "", "red fox")]
    assert list(plain.iter_documents()) == [("d1", "red fox")]
    titled = local_dataset(tmp_path, "d1\tFoxes\tred fox\n", "q1\tfox\n", names=names)
    assert list(titled.iter_fields()) == [("d1", "Foxes", "red fox")]


def test_json_and_jsonl_files_of_any_case_are_json_lines(tmp_path):
    """`.json` is as common a name for BEIR's files as `.jsonl` (read as TSV, each line would be
    refused as one column)."""
    corpus = '{"_id": "d1", "text": "fox"}\n'
    for names in (("c.json", "q.json", "r.txt"), ("c.JSONL", "q.Json", "r.txt")):
        dataset = local_dataset(tmp_path, corpus, names=names)
        assert list(dataset.iter_documents()) == [("d1", "fox")]
        assert dataset.queries() == {"q1": "fox"}


@pytest.mark.parametrize(
    ("queries", "qrels", "message"),
    [
        ("q1\tfox\nq2\tfox\tx\n", QRELS, "q.tsv, line 2: expected 2 tab-separated columns (id, text), got 3"),
        ("q1\tfox\n", "q1 0 d1 1 x\n", "r.txt, line 1: expected 4 fields 'query iteration doc grade', got 5"),
        ("q1\tfox\n", "q1 d1\n", "r.txt, line 1: expected 4 fields 'query iteration doc grade', got 2"),
    ],
)  # fmt: skip
def test_a_line_of_the_wrong_width_is_named_with_the_layout_expected(queries, qrels, message, tmp_path):
    """Each refusal names the file, the line, the layout expected and the count found (BEIR's
    missing header is suggested only for a line of BEIR's three fields)."""
    dataset = local_dataset(
        tmp_path, '{"_id": "d1", "text": "fox"}\n', queries, qrels, ("c.jsonl", "q.tsv", "r.txt")
    )
    with pytest.raises(UserError) as refused:
        dataset.queries()
    assert str(refused.value) == f"{tmp_path}/{message}"


def test_an_empty_id_is_refused_naming_its_line(tmp_path):
    """An empty id passes the whitespace check (it holds none), yet a run file line written with it
    has a field missing and reads back as another ranking: it is refused where it is read."""
    corpus = '{"_id": "d1", "text": "fox"}\n{"_id": "", "text": "fox"}\n'
    with pytest.raises(UserError, match=r'c\.jsonl, line 2: the "_id" is empty$'):
        list(local_dataset(tmp_path, corpus).iter_documents())
    tsv = local_dataset(tmp_path, "d1\tfox\n\tfox\n", names=("c.tsv", "q.jsonl", "r.txt"))
    with pytest.raises(UserError, match=r"c\.tsv, line 2: expected 2 or 3 .* got 2 with an empty id$"):
        list(tsv.iter_documents())


@pytest.mark.parametrize("again", ["d0", "d1", "d2", "d3", "d4"])
def test_a_repeated_document_id_is_refused_whichever_id_it_is(again, tmp_path):
    """Ids are compared by their hashes once sorted: each is compared with the one before it, so a
    repetition is found wherever its hash sorts (not only the smallest); a lookup of a repeated
    id would return either document's text."""
    corpus = "".join(f'{{"_id": "d{i}", "text": "fox {i}"}}\n' for i in range(5))
    corpus += f'{{"_id": "{again}", "text": "another"}}\n'
    dataset = local_dataset(tmp_path, corpus)
    first = int(again[1:]) + 1
    with pytest.raises(UserError, match=rf"line 6: document '{again}' again \(first on line {first}\)$"):
        list(dataset.iter_documents())


def test_the_memory_check_reads_the_corpus_lines_across_every_chunk(tmp_path, monkeypatch):
    """The built-in BM25's memory check counts a local corpus by its line ends, read in chunks:
    every chunk's lines, from zero, so a corpus too big for memory is refused with its size before
    any work (a count of none would skip the check and end in the kernel's out-of-memory kill)."""
    from rerank_eval.datasets import local
    from rerank_eval.first_stage import bm25_index

    monkeypatch.setattr(local, "_CHUNK", 8)  # several chunks, each holding line ends
    corpus = "".join(f'{{"_id": "d{i}", "text": "fox {i}"}}\n' for i in range(3))
    dataset = local_dataset(tmp_path, corpus)
    assert dataset.documents_count() == 3
    monkeypatch.setattr(bm25_index, "available_memory", lambda: 1000)
    config = tmp_path / "bad.yaml"
    result = CliRunner().invoke(app, ["run", "bad", "--config", str(config), "--model", "bm25",
                                      "--first-stage", "bm25s", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "has 3 documents; building the built-in BM25 index needs about" in result.output


def test_the_dataset_version_and_corpus_id_of_local_files_are_those_earlier_versions_recorded(tmp_path):
    """A local dataset's version (in each manifest: `compare` refuses results of differing ones)
    and its corpus id (the name of its doc store, BM25 index and embeddings) are content hashes of
    a fixed layout: changing it would refuse every comparison with earlier results and rebuild
    every cache without a word. Pinned values for three small files."""
    dataset = local_dataset(tmp_path, '{"_id": "d1", "text": "fox"}\n')
    assert dataset.identity() == "local:489648c054a4446e1b693eef6aa97e8f4696602e607a85268c75e23937840606"
    assert dataset.corpus_id() == "local-085686a7886de0f6"
    moved = tmp_path / "moved"
    moved.mkdir()
    assert local_dataset(moved, '{"_id": "d1", "text": "fox"}\n').identity() == dataset.identity()


def test_the_document_store_is_built_once_in_the_cache_and_said(tmp_path, monkeypatch, capsys):
    """The doc store is built into a folder of its own and renamed into the cache when complete
    (a killed build leaves nothing half-built there), saying so once; nothing is written into the
    working directory."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.chdir(working)
    dataset = local_dataset(tmp_path, '{"_id": "d1", "text": "fox"}\n{"_id": "d2", "text": "hen"}\n')
    assert dataset.documents(["d2"]) == {"d2": "hen"}
    folder = tmp_path / "cache" / "docstores" / dataset.corpus_id()
    note = f"building the document store of {dataset.id} (once; cached in {folder})"
    assert capsys.readouterr().err.count(note) == 1  # (ir_datasets' progress follows it)
    assert list(working.iterdir()) == []
    again = local_dataset(tmp_path, '{"_id": "d1", "text": "fox"}\n{"_id": "d2", "text": "hen"}\n')
    assert again.documents(["d1"]) == {"d1": "fox"}
    assert "building" not in capsys.readouterr().err


def test_grades_are_read_up_to_the_largest_c_int_and_refused_past_it(tmp_path):
    """trec_eval and ir_measures hold grades in C ints: every grade up to 2**31 - 1 either way is
    read exactly (graded qrels of 0-100 are common), and one past it is refused in one line."""
    largest = 2**31 - 1
    qrels = f"q1 0 d1 {largest}\nq1 0 d2 -{largest}\nq1 0 d3 100\nq1 0 d4 0\n"
    dataset = local_dataset(tmp_path, '{"_id": "d1", "text": "fox"}\n', qrels=qrels)
    assert dataset.qrels() == {"q1": {"d1": largest, "d2": -largest, "d3": 100, "d4": 0}}
    for grade in (2**31, -(2**31) - 1, 2**32):
        with pytest.raises(UserError, match=rf"r\.txt, line 2: grade {grade} is out of range$"):
            local_dataset(
                tmp_path, '{"_id": "d1", "text": "fox"}\n', qrels=f"q1 0 d1 1\nq1 0 d2 {grade}\n"
            ).qrels()


def test_the_judgements_bound_counts_every_judgement_of_every_query(tmp_path, monkeypatch):
    """The bound on a qrels file's size counts each judgement read, of any query: a file one
    past it is refused at the line past it, one at it is read."""
    from rerank_eval.datasets import local_files

    monkeypatch.setattr(local_files, "MAX_JUDGEMENTS", 3)
    corpus = '{"_id": "d1", "text": "fox"}\n'
    assert len(local_dataset(tmp_path, corpus, qrels="q1 0 d1 1\nq1 0 d2 1\nq2 0 d1 0\n").qrels()) == 2
    over = local_dataset(tmp_path, corpus, qrels="q1 0 d1 1\nq1 0 d2 1\nq2 0 d1 0\nq3 0 d1 1\n")
    with pytest.raises(UserError, match=r"r\.txt, line 4: more than 3 judgements$"):
        over.qrels()


@pytest.mark.parametrize("qrels", ["\n\n", "query-id\tcorpus-id\tscore\n"])
def test_a_qrels_file_without_judgements_says_so(qrels, tmp_path):
    """Blank lines, or BEIR's header alone, judge nothing: every query would be left out."""
    dataset = local_dataset(tmp_path, '{"_id": "d1", "text": "fox"}\n', qrels=qrels)
    with pytest.raises(UserError) as refused:
        dataset.qrels()
    assert str(refused.value) == f"qrels file {tmp_path}/r.txt has no judgements"


def test_one_measure_may_be_named_without_a_list(tmp_path):
    """`metrics: nDCG@10` is the list of that one measure, as a list of one is."""
    config = tmp_path / "one.yaml"
    config.write_text("defaults: {metrics: nDCG@10}\n")
    assert load_config(config).metrics == ("nDCG@10",)
