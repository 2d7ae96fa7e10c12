"""Refusals of the command line that no other test reached (found by listing every `UserError`
the code raises against the tests' text): each is one line naming what is wrong, exit 2, and no
result folder, before any scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from tests import builders
from tests.checkpoints import build_bi_encoder


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def bm25_on_scifact(out: Path, *extra) -> list:
    return ["beir", "--datasets", "scifact", "--model", "bm25", "--out", out, *extra]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """Two result folders (`a`, `b`) of bm25 over the scifact fixture run, the run file and a tiny
    bi-encoder."""
    root = tmp_path_factory.mktemp("refusals")
    run_file = builders.write_run(root / "scifact.trec", builders.SCIFACT_RUN)
    for name in ("a", "b"):
        result = run(*bm25_on_scifact(root / name, "--run", f"scifact={run_file}"))
        assert result.exit_code == 0, result.output
    build_bi_encoder(root / "bi-encoder")
    return root


def dense_config(saved: Path, name: str, adapters: str) -> Path:
    """A benchmarks file whose first stage `tiny` is the fixture bi-encoder with these adapters."""
    config = saved / f"{name}.yaml"
    encoder = json.dumps(str(saved / "bi-encoder"))
    config.write_text(
        f"first_stages:\n  tiny: {{kind: dense, encoder: {encoder}, pooling: mean, adapters: {adapters}}}\n"
    )
    return config


CASES = {
    "a paired test no one registered": (
        lambda saved, out: ["compare", saved / "a", saved / "b", "--test", "wilcoxon"],
        "unknown test 'wilcoxon'; use t-test or randomization",
    ),
    "a run file for a dataset the run leaves out": (
        lambda saved, out: bm25_on_scifact(out, "--run", f"nfcorpus={saved / 'scifact.trec'}"),
        "--run names dataset 'nfcorpus', which this run does not include",
    ),
    "an argument to a first stage kind that takes none": (
        lambda saved, out: bm25_on_scifact(out, "--first-stage", "bm25s:k1=2"),
        "first stage kind bm25s takes no argument (got bm25s:k1=2)",
    ),
    "a first stage kind no one registered": (
        lambda saved, out: bm25_on_scifact(out, "--first-stage", "splade:naver/x"),
        "unknown first stage kind 'splade'; known: bm25s, dense, hub, lucene",
    ),
    "two models that would share a folder": (
        lambda saved, out: bm25_on_scifact(out, "--model", "bm25"),
        "--model names two models with the same folder name: bm25, bm25",
    ),
    "a folder that holds no result": (
        lambda saved, out: ["compare", out.parent, saved / "a"],
        "is not a rerank-eval result folder (no manifest.json)",
    ),
    "dense adapters named by other sides": (
        lambda saved, out: bm25_on_scifact(
            out, "--config", dense_config(saved, "sides", "{queries: q}"), "--first-stage", "tiny"
        ),
        "sides.yaml: first_stages.tiny.adapters: expected {query: SUBFOLDER, passage: SUBFOLDER}, "
        "got {'queries': 'q'}",
    ),
    "a dense adapter the encoder lacks": (
        lambda saved, out: bm25_on_scifact(
            out, "--config", dense_config(saved, "lacks", "{query: lora-q}"), "--first-stage", "tiny"
        ),
        "bi-encoder has no adapter 'lora-q' (needs lora-q/adapter_config.json and "
        "lora-q/adapter_model.safetensors)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refusal_is_one_line_and_writes_nothing(saved, tmp_path, case):
    command, message = CASES[case]
    out = tmp_path / "out"
    result = run(*command(saved, out))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.output
    assert not out.exists() and sorted(tmp_path.iterdir()) == []
