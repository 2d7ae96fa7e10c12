"""Several processes: `torchrun --nproc-per-node 2` (gloo on CPU) gives the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import builders
from tests.checkpoints import build_listwise_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    checkpoint = build_listwise_checkpoint(folder / "ck")
    *_, run = builders.synthetic_nq()
    builders.write_run(folder / "runs" / "nq.trec", run)
    return folder, checkpoint, folder / "runs"


def benchmark(launcher: list[str], out: Path, cache: Path, checkpoint: Path, runs: Path):
    # --runs-dir, not --run: torchrun's argument parser takes "--run" for an abbreviation of its own
    command = [*launcher, "-m", "rerank_eval", "beir", "--datasets", "nq", "--model", str(checkpoint),
               "--runs-dir", str(runs), "--out", str(out)]  # fmt: skip
    env = {**os.environ, "RERANK_EVAL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_two_gloo_processes_match_one(setup):
    folder, checkpoint, runs = setup
    single = benchmark([sys.executable], folder / "single", folder / "cache1", checkpoint, runs)
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = benchmark(launcher, folder / "double", folder / "cache2", checkpoint, runs)
    assert double.returncode == 0, double.stderr[-3000:]

    # every chunk of queries is scored whole by one rank: the very batches of one process
    for name in ("per_query.csv", "summary.csv", "runs/nq.trec", "runs/nq.first-stage.trec"):
        assert (folder / "double" / name).read_bytes() == (folder / "single" / name).read_bytes(), name

    journals = sorted((folder / "cache2" / "journals").glob("nq-*.jsonl"))
    assert [p.name.split(".")[1] for p in journals] == ["rank0-of-2", "rank1-of-2"]
    counts = [len(p.read_text().splitlines()) for p in journals]
    assert counts == [32, 16]  # chunks of 16 queries: the first and third, the second
    manifest = json.loads((folder / "double" / "manifest.json").read_text())
    assert manifest["datasets"][0]["coverage"]["queries_with_candidates"] == 48
