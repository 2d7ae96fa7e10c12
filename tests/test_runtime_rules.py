"""Rules of the runtime helpers, checked in one process without starting a job: which rank is
which under torchrun (the collectives faked), progress lines in a log on a fake clock, and what a
manifest records of the software that ran."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import rerank_eval
from rerank_eval.errors import UserError
from rerank_eval.results import provenance
from rerank_eval.runtime import distributed, progress
from rerank_eval.runtime.distributed import Ranks

# -- ranks ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_ranks():
    """`ranks()` is read once per process: each test reads it anew, and leaves no job behind."""
    distributed.ranks.cache_clear()
    yield
    distributed.ranks.cache_clear()


@pytest.fixture
def job(monkeypatch, fresh_ranks):
    """A torchrun job that has not started its process group: what `ranks()` asks of it."""
    asked = {}
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend, timeout: asked.update(backend=backend, timeout=timeout)
    )
    monkeypatch.setattr(dist, "get_rank", lambda: 5)  # (a second node's: not its local rank)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: asked.update(device=index))
    for name, value in {"WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RERANK_EVAL_RANK_WAIT_MINUTES", raising=False)
    return asked


def test_a_rank_of_a_job_is_its_global_rank_in_the_whole_world_on_its_local_gpu(job, monkeypatch):
    """On the second of two nodes of 4 GPUs, the process with LOCAL_RANK 1 is rank 5 of 8: its share
    of the queries is rank 5's, its GPU is cuda:1. Ranks wait 6 hours for rank 0 to build caches."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.ranks() == Ranks(5, 8, 1)
    assert job == {"backend": "gloo", "timeout": timedelta(hours=6)}
    distributed.ranks.cache_clear()
    job.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("RERANK_EVAL_RANK_WAIT_MINUTES", "90")
    assert distributed.ranks() == Ranks(5, 8, 1)
    assert job == {"backend": "nccl", "device": 1, "timeout": timedelta(minutes=90)}
    assert distributed.default_device() == "cuda:1"


def test_a_process_group_already_started_is_not_started_again(job, monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    assert distributed.ranks() == Ranks(5, 8, 1) and job == {}


def test_without_torchrun_there_is_one_rank_and_no_collective(monkeypatch, fresh_ranks):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # (a count of this node's processes: not the world)
    for name in ("barrier", "broadcast_object_list", "all_gather", "all_gather_object", "init_process_group"):
        monkeypatch.setattr(dist, name, lambda *a, **k: pytest.fail("a collective in a single process"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU: still the usual default
    only = distributed.ranks()
    assert only == Ranks(0, 1, 0) and only.is_main and only.owns(0) and only.owns(7)
    only.barrier()
    value = torch.tensor([3, 1])
    assert distributed.agreed("decision") == "decision"
    assert distributed.all_gathered_objects({"rank": 0}) == [{"rank": 0}]
    assert distributed.all_gathered(value)[0] is value and len(distributed.all_gathered(value)) == 1
    assert distributed.default_device() is None


def test_rank_zero_alone_is_main_and_every_rank_but_one_waits_at_a_barrier(monkeypatch):
    waited = []
    monkeypatch.setattr(dist, "barrier", lambda: waited.append(True))
    assert [Ranks(rank, 2, rank).is_main for rank in (0, 1)] == [True, False]
    Ranks(1, 2, 1).barrier()
    assert waited == [True]


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "ranks", lambda: Ranks(rank, world, rank))


def test_every_rank_takes_rank_zeros_decision(monkeypatch):
    sources = []

    def broadcast(holder, src):
        sources.append(src)
        holder[0] = "rank 0's"

    _as_rank(monkeypatch, 2, 3)
    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    assert distributed.agreed("rank 2's") == "rank 0's" and sources == [0]


def test_gathered_values_come_in_rank_order(monkeypatch):
    """Rank 1's journal counts are rank 1's in the manifest: the gathered list is indexed by rank."""
    _as_rank(monkeypatch, 1, 3)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)

    def all_gather_object(gathered, value):
        assert value == {"rank": 1}
        gathered[:] = [{"rank": rank} for rank in range(3)]

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    assert distributed.all_gathered_objects({"rank": 1}) == [{"rank": 0}, {"rank": 1}, {"rank": 2}]


@pytest.mark.parametrize(
    "message",
    ["[gloo/transport/tcp/pair.cc:598] Read error [127.0.0.1]:29500: Broken pipe",
     "[gloo/transport/tcp/pair.cc:598] Connection Reset by Peer"],
)  # fmt: skip
def test_a_peers_broken_connection_is_one_line_naming_this_rank(monkeypatch, message):
    _as_rank(monkeypatch, 3, 4)
    with pytest.raises(UserError) as stopped:
        with distributed.peers_present("gathering every rank's results"):
            raise RuntimeError(message)
    assert str(stopped.value).startswith(
        "rank 3: another rank stopped while gathering every rank's results ("
    )


def test_a_network_error_of_the_store_is_a_stopped_peer_whatever_it_says(monkeypatch):
    _as_rank(monkeypatch, 1, 2)
    with pytest.raises(UserError) as stopped:
        with distributed.peers_present("waiting for the other ranks"):
            raise dist.DistNetworkError("timed out after 1800000ms")
    assert str(stopped.value).startswith("rank 1: another rank stopped while waiting for the other ranks (")


def test_a_rank_leaving_its_job_flushes_its_output_then_ends_with_success(monkeypatch):
    """(Checked without a real job: the subprocess test of test_distributed passes without the
    flush wherever PYTHONUNBUFFERED is set.)"""
    done = []

    class Stream:
        def __init__(self, name):
            self.name = name

        def flush(self):
            done.append(f"flush {self.name}")

    class Exited(Exception):
        pass

    def exit_now(status):
        done.append(f"exit {status}")
        raise Exited

    group = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "torch.distributed", group)
    monkeypatch.setattr(sys, "stdout", Stream("stdout"))
    monkeypatch.setattr(sys, "stderr", Stream("stderr"))
    monkeypatch.setattr(distributed.os, "_exit", exit_now)
    with pytest.raises(Exited):
        distributed.leave_job()
    assert done == ["flush stdout", "flush stderr", "exit 0"]


# -- progress ------------------------------------------------------------------------------------


def _clock(monkeypatch, *readings: float) -> None:
    """time.monotonic reads `readings` in turn (the first: when the count starts)."""
    left = iter(readings)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(left))


def _logged(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_a_line_comes_at_most_every_ten_seconds_after_the_last_line(monkeypatch, capsys):
    _clock(monkeypatch, 0.0, 12.0, 15.0, 21.0, 22.0)
    count = progress._LoggedCount(100, "x")
    for _ in range(4):
        count.advance(10)
    # 12 s: 10 at 10/12 = 0.83/s, 90 left: 108 s; 15 s, 21 s: under 10 s since the line at 12 s;
    # 22 s: 10 s since, 40 at 40/22 = 1.82/s, 60 left: 33 s
    assert _logged(capsys) == ["x: 10/100 (0.8/s, 1 min 48 s left)", "x: 40/100 (1.8/s, 33 s left)"]


def test_an_unknown_total_gives_a_line_every_ten_seconds_only(monkeypatch, capsys):
    """(A total of 0: a corpus whose size ir_datasets does not know.)"""
    _clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 10.0)
    count = progress._LoggedCount(0, "indexing x")
    for _ in range(4):
        count.advance(1)
    (line,) = _logged(capsys)
    assert line == "indexing x: 4 (0.4/s)"  # no total to count towards, no time left


def test_a_count_past_its_total_ends_with_a_line_too(monkeypatch, capsys):
    _clock(monkeypatch, 0.0, 1.0, 2.0)
    count = progress._LoggedCount(5, "x")
    count.advance(3)
    count.advance(4)  # (a total that was an estimate)
    assert _logged(capsys) == ["x: 7/5 (3.5/s)"]


def test_a_count_that_runs_past_its_total_gives_no_line_per_item(monkeypatch, capsys):
    """BM25 indexing tracks documents against ir_datasets' metadata count (`documents_count`: the
    real dataset's, not a local copy's): a corpus longer than that count logged every document
    past it, one line each, instead of a line at most every 10 s."""
    _clock(monkeypatch, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 13.0)
    count = progress._LoggedCount(3, "indexing x")
    for _ in range(6):
        count.advance(1)
    # 3/3 at 3 s; 4/3 and 5/3 at 4 s and 5 s come too soon; 6/3 at 13 s, 10 s after the last line
    assert _logged(capsys) == ["indexing x: 3/3 (1.0/s)", "indexing x: 6/3 (0.5/s)"]


def test_a_count_done_at_once_or_still_at_nothing_divides_by_no_zero(monkeypatch, capsys):
    _clock(monkeypatch, 50.0, 50.0)
    progress._LoggedCount(2, "at once").advance(2)
    _clock(monkeypatch, 0.0, 10.0)
    progress._LoggedCount(10, "nothing yet").advance(0)
    at_once, nothing = _logged(capsys)
    assert at_once.startswith("at once: 2/2 (") and "left" not in at_once
    assert nothing == "nothing yet: 0/10 (0.0/s)"  # no rate yet: no time left to say


def test_a_step_in_a_log_says_when_it_starts_and_how_long_it_took(monkeypatch, capsys):
    _clock(monkeypatch, 100.0, 102.46)
    with progress.step("x: evaluation"):
        pass
    assert _logged(capsys) == ["x: evaluation ...", "x: evaluation: done in 2.5 s"]


def test_tracked_items_advance_by_their_size_once_each_is_done(monkeypatch):
    events = []

    class Counting:
        def __init__(self, total, description):
            events.append(("start", total, description))

        def __enter__(self):
            return lambda count: events.append(("advance", count))

        def __exit__(self, *exc):
            events.append(("end",))

    monkeypatch.setattr(progress, "counting", Counting)
    for item in progress.track(["abc", "d", "ef"], 6, "x", size=len):
        events.append(("item", item))
    assert events == [
        ("start", 6, "x"),
        ("item", "abc"), ("advance", 3), ("item", "d"), ("advance", 1), ("item", "ef"), ("advance", 2),
        ("end",),
    ]  # fmt: skip


def test_a_terminal_bar_counts_towards_its_total(monkeypatch):
    bars = []

    class Recorded(progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, auto_refresh=False)
            bars.append(self)

    terminal = progress.Console(file=io.StringIO(), force_terminal=True, markup=False)
    monkeypatch.setattr(progress, "stderr_console", terminal)
    monkeypatch.setattr(progress, "Progress", Recorded)
    with progress.counting(10, "x") as advance:
        advance(3)
        advance(4)
    (task,) = bars[0].tasks
    assert (task.completed, task.total) == (7, 10)


def test_the_rate_column_reads_items_per_second():
    column = progress._RateColumn()
    assert column.render(types.SimpleNamespace(speed=1234.56)).plain == "1,234.6/s"
    assert column.render(types.SimpleNamespace(speed=None)).plain == ""


# -- provenance ----------------------------------------------------------------------------------


def test_the_versions_recorded_are_the_installed_ones_and_a_missing_package_is_none(monkeypatch):
    recorded = provenance.package_versions()
    numbers_depend_on = ("torch", "transformers", "peft", "tokenizers", "numpy", "scipy", "ir_measures")
    for name in (*numbers_depend_on, "pytrec_eval_terrier"):
        assert recorded[name] == metadata.version(name), name
    monkeypatch.setattr(provenance, "TRACKED_PACKAGES", ("numpy", "no-such-package-here"))
    assert provenance.package_versions() == {"numpy": metadata.version("numpy"), "no-such-package-here": None}


def test_the_source_whose_commit_is_recorded_is_the_package_itself():
    assert provenance.SOURCE == Path(rerank_eval.__file__).resolve().parent


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_only_the_sources_own_files_mark_it_modified_and_reading_it_writes_nothing(tmp_path):
    """The package inside a checkout: an edited test or README beside it is no code that ran. Git's
    index (the user's) is not refreshed by the status read."""
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "code.py").write_text("x = 1\n")
    (tmp_path / "README").write_text("read me\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "one")
    commit = _git(tmp_path, "rev-parse", "HEAD").strip()
    read = provenance.source_revision.__wrapped__
    (tmp_path / "README").write_text("edited\n")
    assert read(tmp_path / "package") == commit
    code = tmp_path / "package" / "code.py"
    code.write_text("x = 1\n")  # the same text, written again: its stat data is not the index's
    os.utime(code, (code.stat().st_atime + 100, code.stat().st_mtime + 100))
    index = tmp_path / ".git" / "index"
    before = index.read_bytes()
    assert read(tmp_path / "package") == commit
    assert index.read_bytes() == before  # (a status that may lock the index refreshes those)
    code.write_text("x = 2\n")
    assert read(tmp_path / "package") == commit + "+modified"


def test_no_checkout_records_no_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.source_revision.__wrapped__(tmp_path) is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [("fails", "c0ffee+unknown"), ("times out", "c0ffee+unknown"), ("no git", None)],
)
def test_a_status_git_cannot_give_is_recorded_as_unknown_not_clean(tmp_path, monkeypatch, status, expected):
    def run(command, **options):
        if status == "no git":
            raise FileNotFoundError("git")
        if "rev-parse" in command:
            return subprocess.CompletedProcess(command, 0, "c0ffee\n", "")
        if status == "times out":
            raise subprocess.TimeoutExpired(command, options["timeout"])
        return subprocess.CompletedProcess(command, 128, "", "fatal: index file corrupt")

    monkeypatch.setattr(provenance.subprocess, "run", run)
    assert provenance.source_revision.__wrapped__(tmp_path) == expected
