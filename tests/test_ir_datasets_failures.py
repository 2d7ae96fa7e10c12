"""ir_datasets failures for any dataset id end in one line; its own log lines are quiet by default.

Cranfield is a real ir_datasets dataset that the tests never build: its download is made to fail
the way an offline machine fails (the hosts cannot be resolved), and its archive is cut short.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
import requests
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


@pytest.fixture
def offline(monkeypatch):
    """Every ir_datasets download fails as it does without a network: the name does not resolve."""
    from ir_datasets.util.download import RequestsDownload

    @contextlib.contextmanager
    def unreachable(self):
        raise requests.exceptions.ConnectionError(f"Failed to resolve host of {self.url}")
        yield  # pragma: no cover

    monkeypatch.setattr(RequestsDownload, "stream", unreachable)


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_dataset_whose_files_cannot_be_downloaded_is_one_line(config, offline, tmp_path):
    result = run("run", "classic", "--config", config, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    error = result.output.split("error: ")[1]
    assert error.startswith(
        "cannot download cranfield through ir_datasets (its download hosts cannot be reached)"
    )
    assert (
        f"run `rerank-eval fetch classic --datasets cranfield --model bm25 --config {config}` on a" in error
    )
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


def test_a_truncated_archive_is_one_line_naming_the_folder(config, offline, tmp_path):
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

    # nothing cached (other tests fill the shared Hub cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
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
