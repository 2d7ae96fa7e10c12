"""The whole pipeline on the real Vaswani collection (../shared), with the built-in BM25."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app

CONFIG = """
defaults: {top_k: 100, metrics: [nDCG@10], model: bm25}
first_stages:
  bm25s: {kind: bm25s, label: "built-in BM25 (bm25s, Lucene variant)", k1: 0.9, b: 0.4}
suites:
  vaswani:
    average_label: Vaswani
    datasets:
      - {key: vaswani, id: vaswani, language: en, first_stage: bm25s, drop_self_matches: false}
models:
  bm25: {family: first-stage-order}
"""


@pytest.fixture(scope="module")
def vaswani_result(vaswani_available, tmp_path_factory):
    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    folder = tmp_path_factory.mktemp("vaswani")
    config = folder / "vaswani.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    out = folder / "out"
    result = CliRunner().invoke(app, ["run", "vaswani", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_bm25s_first_stage_lands_near_lucene(vaswani_result):
    summary = pd.read_csv(vaswani_result / "summary.csv")
    row = summary[(summary.dataset == "vaswani") & (summary.measure == "nDCG@10")].iloc[0]
    # Lucene BM25 gives 0.4368 over the top 100; bm25s over terms that are Lucene's but for a few
    # Porter departures gives 0.4378 (0.4412 with Snowball's Porter2 stemmer)
    assert row.first_stage == pytest.approx(0.4368, abs=0.002)
    assert row.reranked == pytest.approx(row.first_stage, abs=1e-12)
    assert row.queries == 93


def test_index_is_cached_and_reused(vaswani_result, tmp_path):
    manifest = json.loads((vaswani_result / "manifest.json").read_text())
    settings = manifest["datasets"][0]["first_stage"]["settings"]
    assert settings["analyzer"]["stemmer"] == "porter" and settings["analyzer"]["stopwords"].startswith(
        "bm25s"
    )
    config = vaswani_result.parent / "vaswani.yaml"
    again = CliRunner().invoke(
        app, ["run", "vaswani", "--config", str(config), "--out", str(tmp_path / "again")]
    )
    assert again.exit_code == 0
    assert "building the BM25 index" not in again.output
    assert (tmp_path / "again" / "summary.csv").read_text() == (vaswani_result / "summary.csv").read_text()


def test_the_script_puts_the_shared_copy_where_ir_datasets_reads_it(vaswani_available, tmp_path):
    """`scripts/vaswani.py` (the docs' offline way to try the packaged `vaswani` suite) writes
    ir_datasets' files, which ir_datasets then reads as its own `vaswani`; a folder without the
    collection is one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "vaswani.py"
    env = {**os.environ, "IR_DATASETS_HOME": str(tmp_path / "home")}
    missing = subprocess.run(
        [sys.executable, script, tmp_path / "none"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 1 and missing.stderr.startswith("error: no Vaswani collection at")
    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    done = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    code = (
        "import ir_datasets; d = ir_datasets.load('vaswani'); "
        "print(*(sum(1 for _ in items) for items in (d.docs_iter(), d.queries_iter(), d.qrels_iter())))"
    )
    counts = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert counts.stdout.split() == ["11429", "93", "2083"], counts.stderr
