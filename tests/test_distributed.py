"""Several processes: `torchrun --nproc-per-node 2` (gloo on CPU) gives the single-process result."""

from __future__ import annotations

import importlib
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
    # the queries scored are every rank's (once rank 0's 32 alone), each rank's own recorded too
    timings = manifest["datasets"][0]["timings"]
    assert timings["scored_queries"] == 48
    assert [(rank["rank"], rank["scored_queries"]) for rank in timings["ranks"]] == [(0, 32), (1, 16)]
    assert all("forward_passes" in rank["execution"] for rank in timings["ranks"])
    single_timings = json.loads((folder / "single" / "manifest.json").read_text())["datasets"][0]["timings"]
    assert single_timings["scored_queries"] == 48 and "ranks" not in single_timings


def test_a_rank_whose_peer_stopped_ends_in_one_line():
    """When one rank stops with its error, the others' collectives fail in gloo or NCCL; each says
    so in one line instead of a traceback."""
    from rerank_eval.errors import UserError
    from rerank_eval.runtime.distributed import peers_present

    with pytest.raises(UserError) as stopped:
        with peers_present("waiting for the other ranks"):
            raise RuntimeError(
                "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"
            )
    assert str(stopped.value).startswith(
        "rank 0: another rank stopped while waiting for the other ranks (RuntimeError: "
    )
    assert str(stopped.value).endswith("Connection closed by peer); its own message says why")
    # this rank's own failures inside a collective stay what they are
    import torch

    for own in (torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("NCCL error: invalid argument")):
        with pytest.raises(type(own)):
            with peers_present("gathering every rank's results"):
                raise own


def test_under_torchrun_the_resume_advice_names_the_torchrun_command_and_the_ranks_own_count(monkeypatch):
    """The advice keeps the single-process rule of leaving --fresh out (it would discard every
    rank's journal); an interrupted rank counts its own share, which is all it knows of."""
    from rerank_eval.cli.benchmark import _resume_command
    from rerank_eval.pipeline.score import _journaled
    from rerank_eval.runtime.distributed import Ranks

    monkeypatch.setattr(sys, "argv", ["rerank-eval", "beir", "--datasets", "nq", "--fresh"])
    assert _resume_command() == "rerank-eval beir --datasets nq"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (
        _resume_command()
        == "the same torchrun command without --fresh, running rerank-eval beir --datasets nq"
    )
    monkeypatch.setattr(sys, "argv", ["rerank-eval", "beir", "--datasets", "nq"])
    assert _resume_command() == "the same torchrun command, running rerank-eval beir --datasets nq"
    chunks = [[_Request(f"q{chunk}-{i}") for i in range(16)] for chunk in range(3)]
    scored = {f"q{chunk}-{i}": None for chunk in (0, 1) for i in range(16)}  # two chunks, one per rank
    assert _journaled(Ranks(), chunks, scored, "nq") == "32 of 48 queries of nq"
    assert _journaled(Ranks(0, 2, 0), chunks, scored, "nq") == "16 of the 32 queries of nq in rank 0's share"
    assert _journaled(Ranks(1, 2, 1), chunks, scored, "nq") == "16 of the 16 queries of nq in rank 1's share"


class _Request:
    def __init__(self, query_id: str) -> None:
        self.query_id = query_id


def test_a_rank_leaves_its_job_at_once_after_its_command_succeeds_only(tmp_path, monkeypatch):
    """Left to the interpreter's exit, gloo's threads now and then ended a finished rank in SIGABRT
    (torchrun then failed the job): a rank of a job ends at once, exit 0, its output flushed first;
    a process in no job goes on. After a failure its error is said as ever."""
    from typer.testing import CliRunner

    from rerank_eval.runtime.distributed import leave_job

    app_module = importlib.import_module("rerank_eval.cli.app")  # (the package's `app` is the Typer app)
    rank = (
        "import sys, torch.distributed as dist\n"
        "from rerank_eval.runtime.distributed import leave_job\n"
        f"dist.init_process_group('gloo', init_method='file://{tmp_path / 'store'}', rank=0, world_size=1)\n"
        "print('the table', end='')\n"
        "print('on stderr', end='', file=sys.stderr)\n"
        "leave_job()\n"
        "print('not reached')\n"
    )
    ended = subprocess.run([sys.executable, "-c", rank], capture_output=True, text=True, timeout=120)
    assert (ended.returncode, ended.stdout, ended.stderr) == (0, "the table", "on stderr")
    leave_job()  # (in no job: nothing to do, and this process goes on)
    left = []
    monkeypatch.setattr(app_module, "leave_job", lambda: left.append(True))
    assert CliRunner().invoke(app_module.app, ["suites"]).exit_code == 0 and left == [True]
    missing = str(tmp_path / "none.yaml")
    assert CliRunner().invoke(app_module.app, ["suites", "--config", missing]).exit_code == 2
    assert left == [True]
