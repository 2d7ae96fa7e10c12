"""A resumed run writes byte-identical files, for every reranker family.

A kill -9 leaves the journal with the whole lines of the chunks it finished, perhaps part of a chunk,
and a half-written last line. Here the journal of an uninterrupted run is cut that way
(deterministic, one test per family), a family whose scores depend on batch composition by design
shows the runner's chunks are the ones an uninterrupted run uses. A real SIGKILL of the real
all-MiniLM-L6-v2 weights on the real Vaswani collection is in tests/test_vaswani_minilm.py.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.rerankers.first_stage_order import FirstStageOrder
from tests import builders
from tests.checkpoints import (
    build_bi_encoder,
    build_causal_lm,
    build_cross_encoder,
    build_listwise_checkpoint,
)

QUERIES = 48  # the synthetic nq fixture
COMPARED = ("runs/nq.trec", "runs/nq.first-stage.trec", "per_query.csv", "summary.csv")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    *_, run = builders.synthetic_nq()
    return {
        "run": builders.write_run(root / "nq.trec", run),
        "listwise": ["--model", str(build_listwise_checkpoint(root / "listwise"))],
        "cross-encoder": ["--model", str(build_cross_encoder(root / "ce"))],
        "yes-no": ["--model", str(build_causal_lm(root / "lm")), "--family", "yes-no"],
        "one-zero": ["--model", str(root / "lm"), "--family", "one-zero"],
        "bi-encoder": ["--model", str(build_bi_encoder(root / "bi")), "--family", "bi-encoder"],
        "first-stage-order": ["--model", "bm25"],
    }


def run_nq(setup: dict, family: str, out: Path, cache: Path, monkeypatch) -> dict:
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    args = ["beir", "--datasets", "nq", "--run", f"nq={setup['run']}", "--out", str(out), *setup[family]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def cut_like_a_kill(journal: Path, destination: Path, whole_lines: int) -> None:
    """The first `whole_lines` lines of `journal` and half of the next, as a kill mid-write leaves."""
    lines = journal.read_bytes().split(b"\n")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(b"".join(line + b"\n" for line in lines[:whole_lines]) + lines[whole_lines][:25])


def assert_same_files(one: Path, other: Path, names: tuple[str, ...]) -> None:
    for name in names:
        assert (one / name).read_bytes() == (other / name).read_bytes(), name


def resumed_after_a_cut(setup, family, tmp_path, monkeypatch, whole_lines: int) -> tuple[dict, dict]:
    reference = run_nq(setup, family, tmp_path / "reference", tmp_path / "cache-a", monkeypatch)
    (journal,) = (tmp_path / "cache-a" / "journals").glob("nq-*.jsonl")
    cut_like_a_kill(journal, tmp_path / "cache-b" / "journals" / journal.name, whole_lines)
    resumed = run_nq(setup, family, tmp_path / "resumed", tmp_path / "cache-b", monkeypatch)
    return reference, resumed


@pytest.mark.parametrize(
    "family", ["listwise", "cross-encoder", "yes-no", "one-zero", "bi-encoder", "first-stage-order"]
)
def test_a_run_resumed_mid_chunk_writes_the_same_bytes(setup, family, tmp_path, monkeypatch):
    whole_lines = 21  # past the first chunk of a family with chunks of 16, inside it for 32 and 64
    reference, resumed = resumed_after_a_cut(setup, family, tmp_path, monkeypatch, whole_lines)
    names = COMPARED + (("per_query_blocks.csv",) if family == "listwise" else ())
    assert_same_files(tmp_path / "reference", tmp_path / "resumed", names)
    chunk = reference["model"]["queries_per_chunk"]
    timings = resumed["datasets"][0]["timings"]
    # a chunk cut short is scored again whole, with the same companions
    assert timings["resumed_queries"] == whole_lines // chunk * chunk
    assert timings["scored_queries"] == QUERIES - timings["resumed_queries"]


class CompositionSensitive(FirstStageOrder):
    """Scores that move with the chunk a query is scored in, as float rounding does: any resumed
    chunk composed otherwise than in the uninterrupted run changes the written run."""

    queries_per_call = 5

    def score_batch(self, requests):
        companions = zlib.crc32(" ".join(r.query_id for r in requests).encode()) % 1000
        return [np.asarray(scores) + companions * 1e-9 for scores in super().score_batch(requests)]


@pytest.mark.parametrize("whole_lines", [2, 7, 47])
def test_resumed_chunks_are_the_uninterrupted_runs_chunks(setup, tmp_path, monkeypatch, whole_lines):
    monkeypatch.setattr("rerank_eval.rerankers.first_stage_order.FirstStageOrder", CompositionSensitive)
    reference, resumed = resumed_after_a_cut(setup, "first-stage-order", tmp_path, monkeypatch, whole_lines)
    assert reference["model"]["queries_per_chunk"] == 5
    assert_same_files(tmp_path / "reference", tmp_path / "resumed", COMPARED)
    assert resumed["datasets"][0]["timings"]["resumed_queries"] == whole_lines // 5 * 5
