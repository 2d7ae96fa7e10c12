"""Datasets in local files: a BEIR-format folder and plain corpus/queries/qrels files, evaluated
end to end exactly as the same data through ir_datasets; malformed files give one line each."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.datasets.local import LocalDataset
from rerank_eval.errors import UserError
from tests import builders
from tests.builders import write_local_entry
from tests.checkpoints import build_cross_encoder
from tests.expected import first_stage_ndcg, mean


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """scifact's fixture as BEIR distributes it (a folder), and as TSV/TREC files."""
    import os

    root = tmp_path_factory.mktemp("local")
    source = Path(os.environ["IR_DATASETS_HOME"]) / "beir" / "scifact" / "source.zip"
    with zipfile.ZipFile(source) as archive:
        archive.extractall(root)  # root/scifact/{corpus.jsonl, queries.jsonl, qrels/test.tsv}
    files = root / "files"
    files.mkdir()
    (files / "corpus.tsv").write_text(
        "".join(f"{doc}\t{title}\t{text}\n" for doc, (title, text) in builders.SCIFACT_DOCS.items())
    )
    (files / "queries.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in builders.SCIFACT_QUERIES.items()))
    (files / "qrels.txt").write_text(
        "".join(f"{q} 0 {d} {g}\n" for q, docs in builders.SCIFACT_QRELS.items() for d, g in docs.items())
    )
    config = root / "local.yaml"
    config.write_text(
        "suites:\n  local:\n    datasets:\n"
        "      - {key: scifact, path: scifact, split: test}\n"
        "      - {key: plain, corpus: files/corpus.tsv, queries: files/queries.tsv, qrels: files/qrels.txt}\n"
    )
    return {
        "root": root,
        "config": config,
        "run": builders.write_run(root / "scifact.trec", builders.SCIFACT_RUN),
        "model": build_cross_encoder(root / "ce"),
    }


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The one `error:` line a refused command ends with (progress lines may come before it)."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    return lines[-1]


def per_query(folder: Path, dataset: str, stage: str = "reranked") -> dict[str, float]:
    import pandas as pd

    table = pd.read_csv(folder / "per_query.csv", dtype={"query_id": str})
    rows = table[(table.dataset == dataset) & (table.stage == stage) & (table.measure == "nDCG@10")]
    return dict(zip(rows.query_id, rows.value, strict=True))


def test_entries_name_local_files_relative_to_their_config(data):
    local = {d.key: d for d in load_config(data["config"]).suite("local").datasets}
    folder = data["root"] / "scifact"
    assert local["scifact"].ir_datasets_id is None
    assert Path(local["scifact"].local.corpus) == folder / "corpus.jsonl"
    assert Path(local["scifact"].local.qrels) == folder / "qrels" / "test.tsv"
    assert Path(local["plain"].local.qrels) == data["root"] / "files" / "qrels.txt"
    # only the judged queries, as BEIR's loader keeps a split's (query 9 is judged in no split here)
    judged = {q: builders.SCIFACT_QUERIES[q] for q in ("1", "2", "3")}
    assert LocalDataset(local["scifact"]).queries() == judged


def test_fetch_takes_the_data_of_datasets_that_name_no_first_stage_and_says_their_run_comes_with_the_run(
    data, tmp_path, monkeypatch
):
    """The suite names no first stage: a run brings its run files (--run), which fetch does not
    take, so it fetches their data and says so (it refused the suite, advising a --run it has not)."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    result = invoke("fetch", "local", "--config", data["config"])
    assert result.exit_code == 0, result.output
    for key in ("scifact", "plain"):
        assert f"{key}: it names no first stage, so its run file comes with the run" in result.output
    assert not (tmp_path / "cache" / "bm25s").exists()


def test_fetch_checks_every_datasets_first_stage_before_fetching_any(data, tmp_path, monkeypatch):
    """A first stage that cannot run on a later dataset (a corpus too big for the built-in BM25's
    memory, a language Lucene has no analyzer for) is said before the first dataset is fetched."""
    from rerank_eval.first_stage.bm25s import BuiltInBm25

    def refused(self, spec, source):
        if spec.key == "plain":
            raise UserError(f"{spec.key}: refused here")

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(BuiltInBm25, "preflight", refused)
    result = invoke("fetch", "local", "--config", data["config"], "--first-stage", "bm25s")
    assert result.output.strip().splitlines() == ["error: plain: refused here"]


LOCAL_FILES = {
    "scifact": ("scifact/corpus.jsonl", "scifact/queries.jsonl", "scifact/qrels/test.tsv"),
    "plain": ("files/corpus.tsv", "files/queries.tsv", "files/qrels.txt"),
}


@pytest.mark.parametrize("key", LOCAL_FILES)
def test_local_files_with_a_trec_run_score_as_computed_by_hand(data, key, tmp_path):
    """Any TREC run against any qrels file: the first-stage order evaluated (the unjudged query
    9 left out, judged query 3 without candidates scoring 0), the manifest holding the files' hashes."""
    out = tmp_path / "out"
    result = invoke("run", "local", "--config", data["config"], "--datasets", key, "--model", "bm25",
                    "--run", f"{key}={data['run']}", "--top-k", "3", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = first_stage_ndcg(builders.SCIFACT_RUN, builders.SCIFACT_QRELS, 3)
    assert set(expected) == {"1", "2", "3"} and expected["3"] == 0.0
    assert per_query(out, key) == pytest.approx(expected, abs=1e-12)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == 2  # format 1 readers could not read a local dataset's record
    record = manifest["datasets"][0]
    assert record["ir_datasets_id"] is None
    paths = [data["root"] / name for name in LOCAL_FILES[key]]
    assert record["local_files"] == {
        role: {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for role, path in zip(("corpus", "queries", "qrels"), paths, strict=True)
    }
    assert record["coverage"]["judged_queries"] == 3
    assert f"{mean(expected.values()):.4f}" in result.output  # the table's nDCG@10


@pytest.mark.parametrize("key", ["scifact", "plain"])
def test_local_files_score_exactly_as_the_same_dataset_through_ir_datasets(data, key, tmp_path):
    """The built-in BM25 over the local corpus and a cross-encoder over the texts looked up in
    the local doc store give the ir_datasets path's values, query for query, and the same runs."""
    common = ["--model", data["model"], "--first-stage", "bm25s", "--top-k", "3"]
    local = invoke(
        "run", "local", "--config", data["config"], "--datasets", key, *common, "--out", tmp_path / "l"
    )
    assert local.exit_code == 0, local.output
    packaged = invoke("beir", "--datasets", "scifact", *common, "--out", tmp_path / "p")
    assert packaged.exit_code == 0, packaged.output
    for stage in ("first_stage", "reranked"):
        assert per_query(tmp_path / "l", key, stage) == per_query(tmp_path / "p", "scifact", stage)
    assert (tmp_path / "l" / "runs" / f"{key}.trec").read_text().replace(key, "scifact") == (
        tmp_path / "p" / "runs" / "scifact.trec"
    ).read_text().replace(key, "scifact")


def test_an_edited_file_is_never_taken_for_the_one_scored_before(data, tmp_path):
    root = tmp_path / "copy"
    root.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        (root / name).write_bytes((data["root"] / "scifact" / name).read_bytes())
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_bytes((data["root"] / "scifact" / "qrels" / "test.tsv").read_bytes())
    config = tmp_path / "c.yaml"
    config.write_text(f"suites:\n  mine:\n    datasets:\n      - {{key: s, path: {root}}}\n")
    args = [
        "run",
        "mine",
        "--config",
        config,
        "--model",
        data["model"],
        "--run",
        f"s={data['run']}",
        "--top-k",
        "3",
    ]

    def resumed(out: str) -> int:
        result = invoke(*args, "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / out / "manifest.json").read_text())["datasets"][0]["timings"][
            "resumed_queries"
        ]

    assert resumed("first") == 0
    assert resumed("same") == 2
    corpus = root / "corpus.jsonl"
    corpus.write_text(corpus.read_text().replace("Daily low-dose aspirin", "Daily aspirin"))
    assert resumed("edited") == 0
    assert invoke("compare", tmp_path / "first", tmp_path / "same").exit_code == 0
    refused = invoke("compare", tmp_path / "first", tmp_path / "edited")
    assert refused.exit_code == 2 and "dataset version of s differs" in refused.output


GOOD_CORPUS = '{"_id": "d1", "title": "", "text": "one"}\n{"_id": "d2", "text": "two"}\n'
GOOD_QUERIES = '{"_id": "q1", "text": "query"}\n'
GOOD_QRELS = "q1 0 d1 1\n"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ((GOOD_CORPUS + "{not json\n", GOOD_QUERIES, GOOD_QRELS), "c.jsonl, line 3: not valid JSON"),
        ((GOOD_CORPUS + '{"id": "d3", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         'c.jsonl, line 3: expected a JSON object with "_id", "text"'),
        ((GOOD_CORPUS + '{"_id": "d1", "text": "again"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: document 'd1' again (first on line 1)"),
        ((GOOD_CORPUS + '{"_id": ["d3"], "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: \"_id\" should be a string, not ['d3']"),
        ((b'{"_id": "d1", "text": "\xff"}\n', GOOD_QUERIES, GOOD_QRELS), "c.jsonl, line 1: not valid UTF-8"),
        ((GOOD_CORPUS + '{"_id": "d3", "text": null}\n', GOOD_QUERIES, GOOD_QRELS),
         'c.jsonl, line 3: "text" should be a string, not None'),
        ((GOOD_CORPUS + '{"_id": "d3", "text": 5}\n', GOOD_QUERIES, GOOD_QRELS),
         'c.jsonl, line 3: "text" should be a string, not 5'),
        ((GOOD_CORPUS + '{"_id": "d3", "title": 7, "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         'c.jsonl, line 3: "title" should be a string, not 7'),
        ((GOOD_CORPUS, '{"_id": "q1", "text": 12}\n', GOOD_QRELS),
         'q.jsonl, line 1: "text" should be a string, not 12'),
        ((GOOD_CORPUS, '{"_id": null, "text": "q"}\n', GOOD_QRELS),
         'q.jsonl, line 1: "_id" should be a string, not None'),
        ((GOOD_CORPUS + '{"_id": true, "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),  # (JSON's true is an int)
         'c.jsonl, line 3: "_id" should be a string, not True'),
        ((GOOD_CORPUS, GOOD_QUERIES + GOOD_QUERIES, GOOD_QRELS),
         "q.jsonl, line 2: query 'q1' again (first on line 1)"),
        ((GOOD_CORPUS, GOOD_QUERIES, "q1 d2 1\n"),  # BEIR's layout without its header line
         "r.txt, line 1: expected 4 fields 'query iteration doc grade' (TREC), or BEIR's with its header "
         "line 'query-id corpus-id score' first, got 3"),
        ((GOOD_CORPUS, GOOD_QUERIES, "query-id corpus-id score\nq1 0 d2 1\n"),
         "r.txt, line 2: expected 3 fields 'query-id corpus-id score', got 4"),
        # an empty query would retrieve nothing and score 0 without a word
        ((GOOD_CORPUS, '{"_id": "q1", "text": " \\t"}\n', GOOD_QRELS),
         "q.jsonl, line 1: query 'q1' has no text"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 high\n"),
         "r.txt, line 2: grade 'high' is not an integer"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d1 0\n"),
         "r.txt, line 2: query 'q1', document 'd1' judged again"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q2 0 d2 1\n"),
         "r.txt judges 1 queries that {dir}/q.jsonl does not have (e.g. 'q2')"),
        ((GOOD_CORPUS, "", GOOD_QRELS), "queries file {dir}/q.jsonl has no queries"),
        # ids a TREC line would split: a run written with them would not read back
        ((GOOD_CORPUS + '{"_id": "d 3", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: id 'd 3' holds whitespace or a control character, which TREC files cannot"),
        ((GOOD_CORPUS + '{"_id": "d\\u00003", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: id 'd\\x003' holds whitespace"),
        ((GOOD_CORPUS, '{"_id": "q\\n1", "text": "q"}\n', GOOD_QRELS), "q.jsonl, line 1: id 'q\\n1' holds"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 99999999999999999999999\n"),
         "r.txt, line 2: grade 99999999999999999999999 is out of range"),
        # Python's int() reads no more than 4,300 digits (a ValueError, not a JSON error)
        ((GOOD_CORPUS + '{"_id": ' + "1" * 5000 + ', "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: not valid JSON (a number too long to read)"),
        ((GOOD_CORPUS, '{"_id": ' + "7" * 5000 + ', "text": "q"}\n', GOOD_QRELS),
         "q.jsonl, line 1: not valid JSON (a number too long to read)"),
        # grades as trec_eval reads them: int() would take "1_0" as 10 and other scripts' digits
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 1_0\n"), "line 2: grade '1_0' is not an integer"),
        # leading zeros are no digits of the value (trec_eval reads 1), a minus counts no digit
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 0000000000000000000001\nq3 0 d1 1\n"),
         "r.txt judges 1 queries that {dir}/q.jsonl does not have (e.g. 'q3')"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 \u0661\n"), "line 2: grade '\u0661' is not an"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 " + "9" * 5000 + "\n"),
         "line 2: grade 99999999999999999999... (5,000 digits) is out of range"),
        # ids and fields as in run files
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d\x012 1\n"), "r.txt, line 2: id 'd\\x012' holds"),
        ((GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1\u00a00 d2 1\n"),
         "r.txt, line 2: expected 4 fields 'query iteration doc grade' (TREC), or BEIR's"),
        ((b'{"_id": "d1", "text": "x", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", GOOD_QUERIES,
          GOOD_QRELS), "c.jsonl, line 1: JSON nested too deeply"),
        # valid JSON that is no text: half a surrogate pair (tokenizers and hashes refuse it later)
        ((GOOD_CORPUS + '{"_id": "d\\ud8003", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: '_id' holds half a surrogate pair ('\\ud800'), which is no text"),
        ((GOOD_CORPUS + '{"_id": "d3", "title": "\\udfff", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: 'title' holds half a surrogate pair ('\\udfff'), which is no text"),
        ((GOOD_CORPUS, '{"_id": "q1", "text": "fox \\uDC00"}\n', GOOD_QRELS),
         "q.jsonl, line 1: 'text' holds half a surrogate pair"),
        # json would keep the last of two values without a word
        ((GOOD_CORPUS + '{"_id": "d3", "_id": "d4", "text": "x"}\n', GOOD_QUERIES, GOOD_QRELS),
         "c.jsonl, line 3: the JSON object names '_id' twice"),
        # no term to index: bm25s would fail inside
        (('{"_id": "d1", "text": "the a"}\n{"_id": "d2", "text": ""}\n', GOOD_QUERIES, GOOD_QRELS),
         ": none of its 2 documents has a term to index (each is empty or stopwords only)"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_one_line_naming_file_and_line(files, message, tmp_path):
    config = write_local_entry(tmp_path, *files)
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s",
                    "--out", tmp_path / "out")  # fmt: skip
    assert message.format(dir=tmp_path) in error_line(result)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("limit", "files", "message"),
    [
        ("MAX_QUERIES", (GOOD_CORPUS, GOOD_QUERIES + '{"_id": "q2", "text": "x"}\n', GOOD_QRELS),
         "q.jsonl, line 2: more than 1 queries"),
        ("MAX_JUDGEMENTS", (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1 0 d2 1\n"),
         "r.txt, line 2: more than 1 judgements"),
    ],
    ids=["queries", "judgements"],
)  # fmt: skip
def test_files_past_any_benchmarks_size_are_refused_as_they_are_read(
    limit, files, message, tmp_path, monkeypatch
):
    """Ten million queries (a few judged) took over a gigabyte and minutes before any check, and
    five million judgements of queries the queries file lacks 2.5 GB: each reader stops at the line
    past its bound. A file that fills memory before it is one line too."""
    from rerank_eval.datasets import local_files

    monkeypatch.setattr(local_files, limit, 1)
    config = write_local_entry(tmp_path, *files)
    args = (
        "run",
        "bad",
        "--config",
        config,
        "--model",
        "bm25",
        "--first-stage",
        "bm25s",
        "--out",
        tmp_path / "o",
    )
    assert message in error_line(invoke(*args))
    monkeypatch.setattr(local_files, limit, 10)

    def exhausted(*args, **kwargs):
        raise MemoryError

    reader = "read_queries" if limit == "MAX_QUERIES" else "read_qrels"
    monkeypatch.setattr(f"rerank_eval.datasets.local.{reader}", exhausted)
    name = "q.jsonl" if limit == "MAX_QUERIES" else "r.txt"
    assert error_line(invoke(*args)) == f"error: {tmp_path / name} does not fit in memory"
    assert not (tmp_path / "o").exists()


def test_ids_sharing_a_hash_are_no_repetition_and_a_repeated_one_is_named_at_its_first_repeat(
    tmp_path, monkeypatch
):
    """Corpus ids are kept as 8-byte hashes; two ids sharing one (about 1 in 4,000 for 100M ids)
    once ended in a StopIteration traceback after the whole corpus was read. Every id hashed
    alike here: distinct ids run, and of several ids repeated under one hash the first repeat in
    the file is named."""
    from rerank_eval.datasets import local

    monkeypatch.setattr(local, "_id_hash", lambda doc_id: 7)
    corpus = "".join(f'{{"_id": "d{i}", "text": "query word{i}"}}\n' for i in range(5))
    config = write_local_entry(tmp_path, corpus, GOOD_QUERIES, GOOD_QRELS)
    args = ("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert invoke(*args, "--out", tmp_path / "o1").exit_code == 0
    repeated = corpus + '{"_id": "d3", "text": "again"}\n{"_id": "d1", "text": "again"}\n'
    (tmp_path / "c.jsonl").write_text(repeated)
    assert "c.jsonl, line 6: document 'd3' again (first on line 4)" in error_line(
        invoke(*args, "--out", tmp_path / "o2")
    )
    assert not (tmp_path / "o2").exists()


def test_an_empty_query_no_judgement_uses_is_left_out_quietly(tmp_path):
    """A queries file often holds every split's queries: only the judged ones must have text."""
    queries = '{"_id": "q1", "text": "one"}\n{"_id": "q9", "text": ""}\n'
    config = write_local_entry(tmp_path, GOOD_CORPUS, queries, GOOD_QRELS)
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s",
                    "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(per_query(tmp_path / "out", "b")) == {"q1"}


TSV_NAMES = ("c.tsv", "q.tsv", "r.txt")


def test_tsv_columns_and_missing_files_are_one_line(tmp_path):
    config = write_local_entry(tmp_path, "d1\tone\n d2 two\n", "q1\tquery\n", GOOD_QRELS, TSV_NAMES)
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert error_line(result) == (
        f"error: {tmp_path}/c.tsv, line 2: expected 2 or 3 tab-separated columns (id, [title,] text), got 1"
    )
    config = write_local_entry(tmp_path, "d1\tone\nd 2\ttwo\n", "q1\tquery\n", GOOD_QRELS, TSV_NAMES)
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert f"{tmp_path}/c.tsv, line 2: id 'd 2' holds whitespace" in error_line(result)
    (tmp_path / "q.tsv").unlink()
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert error_line(result) == f"error: queries file not found: {tmp_path}/q.tsv"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{key: a, id: beir/nq, path: x}", "gives both id (ir_datasets) and path (local files); use one"),
        ("{key: a, path: x, corpus: c.jsonl}", "gives both path (a BEIR-format folder) and files; use one"),
        ("{key: a, corpus: c.jsonl, queries: q.jsonl}",
         "missing qrels (a local dataset names corpus, queries and qrels)"),
        ("{key: a, path: x, split: ../test}",
         "suites.s.datasets[0].split: '../test' cannot be used as a name"),
        ("{key: a}", "missing id (ir_datasets), path (a BEIR folder) or corpus, queries, qrels"),
        ("{key: a, corpus: c.jsonl, queries: q.jsonl, qrels: r.tsv, split: dev}",  # (else ignored)
         "split goes with path (a BEIR folder) (a local dataset names corpus, queries and qrels)"),
    ],
)  # fmt: skip
def test_a_local_entry_names_one_source(entry, message, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"suites:\n  s:\n    datasets:\n      - {entry}\n")
    with pytest.raises(UserError, match=f"^{config}: .*") as error:
        load_config(config)
    assert message in str(error.value)


def test_a_fifo_named_as_a_file_is_refused_before_any_read(tmp_path):
    """A FIFO would block the read forever; it is named instead."""
    import os

    config = write_local_entry(tmp_path, GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    (tmp_path / "c.jsonl").unlink()
    os.mkfifo(tmp_path / "c.jsonl")
    result = invoke("run", "bad", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert error_line(result) == f"error: corpus file {tmp_path}/c.jsonl is a FIFO (named pipe), not a file"


def test_a_path_that_is_not_a_folder_says_so(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(GOOD_CORPUS)
    config = tmp_path / "c.yaml"
    config.write_text("suites:\n  s:\n    datasets:\n      - {key: d, path: corpus.jsonl}\n")
    result = invoke("run", "s", "--config", config, "--model", "bm25", "--first-stage", "bm25s")
    assert error_line(result) == (
        f"error: dataset d: path {tmp_path}/corpus.jsonl is not a folder (a BEIR-format folder holds "
        "corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv)"
    )


def test_a_killed_builds_folder_is_removed_only_by_its_own_host_once_its_process_is_gone(tmp_path):
    import os
    import subprocess

    from rerank_eval.cache import building_folder, process_tag

    host = process_tag().partition("-")[0]
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    target = tmp_path / "index"
    dead = tmp_path / f"index.building-{host}-{gone.pid}-abc"
    alive = tmp_path / f"index.building-{host}-{os.getpid()}-def"
    other_host = tmp_path / "index.building-elsewhere-1-ghi"
    for folder in (dead, alive, other_host):
        folder.mkdir()
    new = building_folder(target)
    assert new.is_dir() and new.name.startswith(f"index.building-{host}-{os.getpid()}-")
    assert not dead.exists() and alive.exists() and other_host.exists()
    # the umask's permissions, as every other cache folder (mkdtemp's 0700, renamed into place,
    # shut out the other users of a shared cache)
    (tmp_path / "plain").mkdir()
    assert new.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_a_killed_builds_folder_goes_when_the_index_is_found_built_by_another(data, tmp_path, monkeypatch):
    """A build killed while another process completed the index: no build of it comes again, so
    the folder it left is removed wherever the index is looked for."""
    import subprocess

    from rerank_eval.cache import cache_root, process_tag

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    args = ["run", "local", "--config", data["config"], "--datasets", "scifact", "--model", "bm25"]
    assert invoke(*args, "--first-stage", "bm25s", "--out", tmp_path / "first").exit_code == 0
    (index,) = [
        p for p in (cache_root() / "bm25s").iterdir() if ".building-" not in p.name and p.suffix != ".lock"
    ]
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = index.with_name(f"{index.name}.building-{process_tag().partition('-')[0]}-{gone.pid}-abcd")
    (left / "part").mkdir(parents=True)
    assert invoke(*args, "--first-stage", "bm25s", "--out", tmp_path / "second").exit_code == 0
    assert not left.exists() and index.is_dir()


def test_a_reused_first_stage_run_compares_with_its_source_and_another_is_refused(data, tmp_path):
    """The candidates, not where they came from, decide whether two results compare: a result that
    reranked its source's saved first-stage run (--run) compares with the source without --force;
    another BM25 is still refused (it was refused both ways before, as the sources differ)."""
    out = {name: tmp_path / name for name in ("source", "reused", "other")}
    common = ["run", "local", "--config", data["config"], "--datasets", "scifact", "--model", "bm25"]
    assert invoke(*common, "--first-stage", "bm25s", "--out", out["source"]).exit_code == 0
    saved = out["source"] / "runs" / "scifact.first-stage.trec"
    assert invoke(*common, "--run", f"scifact={saved}", "--out", out["reused"]).exit_code == 0
    other = ["--first-stage", "bm25s", "--first-stage-set", "k1=2.5", "--out", out["other"]]
    assert invoke(*common, *other).exit_code == 0
    manifests = {n: json.loads((f / "manifest.json").read_text())["datasets"][0] for n, f in out.items()}
    assert manifests["reused"]["first_stage"]["kind"] == "run-file"
    assert manifests["reused"]["candidates_sha256"] == manifests["source"]["candidates_sha256"]
    assert manifests["other"]["candidates_sha256"] != manifests["source"]["candidates_sha256"]
    same = invoke("compare", out["source"], out["reused"])
    assert same.exit_code == 0 and "WARNING" not in same.output, same.output
    refused = invoke("compare", out["source"], out["other"])
    assert refused.exit_code == 2 and "candidates of scifact differ between" in refused.output


def test_json_lines_are_strict_where_they_are_read_and_leave_nested_objects_alone():
    from rerank_eval.textlines import JsonLineError, json_line

    assert json_line('{"_id": "d1", "text": "fox \\ud83e\\udd8a"}')["text"] == "fox \U0001f98a"
    nested = json_line('{"_id": "d1", "text": "x", "metadata": {"a": 1, "a": 2, "b": "\\ud800"}}')
    assert nested["metadata"] == {"a": 2, "b": "\ud800"}  # json's own reading, unused here
    for line, message in (
        ('{"_id": "d1", "text": "x", "_id": "d2"}', "the JSON object names '_id' twice"),
        (
            '{"_id": "d1", "text": "x \\udbff"}',
            "'text' holds half a surrogate pair ('\\udbff'), which is no text",
        ),
        ('{"_id": "d1", "text": "x}', "not valid JSON (Unterminated string"),
    ):
        with pytest.raises(JsonLineError) as raised:
            json_line(line)
        assert str(raised.value).startswith(message), raised.value
