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


def run_lines(path: Path) -> list[tuple[str, str, float]]:
    return [(f[0], f[2], float(f[4])) for f in (line.split() for line in path.read_text().splitlines())]


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

    for name in ("per_query.csv", "summary.csv"):
        assert (folder / "double" / name).read_bytes() == (folder / "single" / name).read_bytes(), name
    one, two = (
        run_lines(folder / "single" / "runs" / "nq.trec"),
        run_lines(folder / "double" / "runs" / "nq.trec"),
    )
    assert [(q, d) for q, d, _ in one] == [(q, d) for q, d, _ in two]
    assert max(abs(a[2] - b[2]) for a, b in zip(one, two)) <= 1e-5

    journals = sorted((folder / "cache2" / "journals").glob("nq-*.jsonl"))
    assert [p.name.split(".")[1] for p in journals] == ["rank0-of-2", "rank1-of-2"]
    counts = [len(p.read_text().splitlines()) for p in journals]
    assert counts == [24, 24]
    manifest = json.loads((folder / "double" / "manifest.json").read_text())
    assert manifest["datasets"][0]["coverage"]["queries_with_candidates"] == 48
