"""Never lose work: journaled scores survive SIGKILL and Ctrl-C, bad input fails cleanly, OOM backs off."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.pipeline.journal import ScoredQuery, ScoreJournal
from rerank_eval.pipeline.score import score_with_backoff
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.listwise.reranker import ListwiseLastToken
from tests import builders
from tests.checkpoints import build_cross_encoder, build_listwise_checkpoint
from tests.expected import trec_ranking

TIMING_KEYS = {"started", "finished", "seconds"}


@pytest.fixture(scope="module")
def slow_setup(tmp_path_factory):
    """A listwise checkpoint slow enough on CPU (about 1 s per 16 queries) and the nq fixture run."""
    folder = tmp_path_factory.mktemp("slow")
    checkpoint = build_listwise_checkpoint(folder / "ck", hidden=128, layers=4)
    *_, run = builders.synthetic_nq()
    run_file = builders.write_run(folder / "nq.trec", run)
    return checkpoint, run_file, folder


def command(checkpoint: Path, run_file: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "rerank_eval", "beir", "--datasets", "nq", "--model", str(checkpoint),
        "--run", f"nq={run_file}", "--out", str(out), "--set", "max_batch_tokens=800",
    ]  # fmt: skip


def env_with_cache(cache: Path) -> dict[str, str]:
    return {**os.environ, "RERANK_EVAL_CACHE": str(cache)}


def journal_lines(cache: Path) -> list[bytes]:
    journals = list((cache / "journals").glob("nq-*.jsonl")) if (cache / "journals").exists() else []
    if not journals:
        return []
    return [line for line in journals[0].read_bytes().split(b"\n")[:-1] if line]


def start_and_wait_for_journal(cmd: list[str], cache: Path, lines: int = 1) -> subprocess.Popen:
    """The command started, once its journal holds `lines` whole lines. (A chunk's lines are written
    at once, but a reader may see them arrive a few at a time.)"""
    process = subprocess.Popen(cmd, env=env_with_cache(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(journal_lines(cache)) < lines:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no journal line appeared"
        time.sleep(0.01)
    return process


def comparable(manifest: dict) -> dict:
    manifest = {k: v for k, v in manifest.items() if k not in TIMING_KEYS}
    for record in manifest["datasets"]:
        record.pop("timings")
    return manifest


@pytest.fixture(scope="module")
def uninterrupted(slow_setup) -> Path:
    """The result folder of the slow setup's command (writing to `out`) run once without
    interruption, then moved aside to `reference`."""
    checkpoint, run_file, folder = slow_setup
    env = env_with_cache(folder / "cache-reference")
    done = subprocess.run(command(checkpoint, run_file, folder / "out"), env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return (folder / "out").rename(folder / "reference")


def test_sigkill_then_rerun_scores_only_the_rest_and_matches_uninterrupted(slow_setup, uninterrupted):
    checkpoint, run_file, folder = slow_setup
    out, crash_cache, reference = folder / "out", folder / "cache-crash", uninterrupted

    chunk = ListwiseLastToken.queries_per_call
    process = start_and_wait_for_journal(command(checkpoint, run_file, out), crash_cache, lines=chunk)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # only whole chunks are resumed: a kill while a chunk's lines were being written leaves some of
    # them (a loaded machine once showed 12 of 16), and that chunk is scored again whole
    scored_before = len(journal_lines(crash_cache)) // chunk * chunk
    assert 0 < scored_before < 48
    assert not out.exists()

    resumed = subprocess.run(command(checkpoint, run_file, out), env=env_with_cache(crash_cache),
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    timings = manifest["datasets"][0]["timings"]
    assert timings["resumed_queries"] == scored_before
    assert timings["scored_queries"] == 48 - scored_before
    for name in ("runs/nq.trec", "per_query.csv", "summary.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert comparable(manifest) == comparable(json.loads((reference / "manifest.json").read_text()))


def test_sigint_stops_at_a_query_boundary_and_prints_the_resume_command(slow_setup):
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-sigint", folder / "sigint-out"
    process = start_and_wait_for_journal(command(checkpoint, run_file, out), cache)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 130, stderr
    assert "run the same command again to resume: rerank-eval beir --datasets nq" in stderr
    assert "Traceback" not in stderr
    lines = journal_lines(cache)
    assert 0 < len(lines) < 48 and all(json.loads(line)["q"].startswith("test") for line in lines)
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


def test_sigterm_stops_like_ctrl_c_and_the_same_command_resumes(slow_setup, uninterrupted):
    """What Slurm or Kubernetes send before SIGKILL: exit 143, the journal kept, no staging folder
    left behind, and the rerun gives the uninterrupted result."""
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-sigterm", folder / "sigterm-out"
    process = start_and_wait_for_journal(command(checkpoint, run_file, out), cache)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 143, stderr
    assert "SIGTERM: stopping before the next forward pass" in stderr
    assert "run the same command again to resume: rerank-eval beir --datasets nq" in stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()
    assert 0 < len(journal_lines(cache)) < 48

    resumed = subprocess.run(command(checkpoint, run_file, out), env=env_with_cache(cache),
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    reference = uninterrupted
    for name in ("runs/nq.trec", "per_query.csv", "summary.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def assert_journal_valid_and_nothing_published(cache: Path, out: Path) -> None:
    expected = {q: trec_ranking(docs) for q, docs in builders.synthetic_nq()[3].items()}
    assert len(ScoreJournal(next((cache / "journals").glob("nq-*.jsonl"))).load(expected)) > 0
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


def test_second_sigint_during_scoring_stops_at_once(slow_setup, monkeypatch):
    """Deterministic: both presses land while the second chunk of queries is being scored."""
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-twice", folder / "twice-out"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    calls = []

    def pressed_twice_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here: stop at the next forward pass
            os.kill(os.getpid(), signal.SIGINT)  # and here: KeyboardInterrupt, at once
        return score_with_backoff(*args, **kwargs)

    monkeypatch.setattr("rerank_eval.pipeline.score.score_with_backoff", pressed_twice_on_the_second_chunk)
    result = run_cli(*command(checkpoint, run_file, out)[3:])
    assert result.exit_code == 130, result.output
    assert "stopping before the next forward pass" in result.output
    assert (
        "stopped at once; the scores, corpus shards and indexes finished so far are kept; "
        "to resume: rerank-eval" in result.output
    )
    assert len(calls) == 2 and len(journal_lines(cache)) == 16  # the first chunk only
    assert_journal_valid_and_nothing_published(cache, out)


def test_first_sigint_while_loading_data_stops_at_once(slow_setup, monkeypatch):
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-loading", folder / "loading-out"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    from rerank_eval.pipeline import prepare

    def pressed_while_loading(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # e.g. during a long doc-store build
        raise AssertionError("the first Ctrl-C did not stop the loading at once")

    monkeypatch.setattr(prepare, "prepare_dataset", pressed_while_loading)
    result = run_cli(*command(checkpoint, run_file, out)[3:])
    assert result.exit_code == 130, result.output
    assert (
        "stopped at once; the scores, corpus shards and indexes finished so far are kept; "
        "to resume: rerank-eval" in result.output
    )
    assert "AssertionError" not in result.output
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


def test_resume_command_leaves_out_fresh_and_keeps_finished_models(slow_setup, monkeypatch):
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-models", folder / "models-out"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    monkeypatch.setattr(sys, "argv", ["rerank-eval", *command(checkpoint, run_file, out)[3:]])
    args = [*sys.argv[1:-2], "--fresh"]  # without --set: it is a setting of the listwise family only
    args[args.index("--model") : args.index("--model") + 2] = ["--model", "bm25", "--model", str(checkpoint)]
    sys.argv[1:] = args

    listwise_chunks = []

    def stopped_in_the_second_model(reranker, *a, **k):
        if reranker.family == "listwise-last-token":
            listwise_chunks.append(1)
            if len(listwise_chunks) == 2:  # the second chunk is abandoned, the first journaled
                os.kill(os.getpid(), signal.SIGINT)
        return score_with_backoff(reranker, *a, **k)

    monkeypatch.setattr("rerank_eval.pipeline.score.score_with_backoff", stopped_in_the_second_model)
    first = run_cli(*args)
    assert first.exit_code == 130, first.output
    resume = first.output.split("run the same command again to resume: ")[1].split("\n")[0]
    assert "--fresh" not in resume and resume.startswith("rerank-eval beir --datasets nq")
    assert (out / "bm25" / "manifest.json").exists() and not (out / checkpoint.name).exists()

    monkeypatch.undo()
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    resumed_args = shlex.split(resume)[1:]
    monkeypatch.setattr(sys, "argv", ["rerank-eval", *resumed_args])
    bm25_manifest = (out / "bm25" / "manifest.json").read_bytes()
    second = run_cli(*resumed_args)
    assert second.exit_code == 0, second.output
    assert f"{out / 'bm25'}: the same results as the folder already there, which is kept" in second.output
    assert (out / "bm25" / "manifest.json").read_bytes() == bm25_manifest
    manifest = json.loads((out / checkpoint.name / "manifest.json").read_text())
    assert manifest["datasets"][0]["timings"]["resumed_queries"] == 16

    assert run_cli(*resumed_args).exit_code == 0  # a complete run repeated: every folder kept
    # the same command line over a changed run file: the old folders are not passed off as its results
    original = run_file.read_text()
    try:
        lines = original.splitlines(keepends=True)
        run_file.write_text("".join(lines[1:]))  # one candidate fewer for the first query
        changed = run_cli(*resumed_args)
    finally:
        run_file.write_text(original)
    assert changed.exit_code == 2
    assert f"error: result folder {out / 'bm25'} exists already and holds other results" in changed.output


def test_non_finite_scores_stop_the_run_naming_the_query(slow_setup, monkeypatch, tmp_path):
    checkpoint, run_file, _ = slow_setup
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    from rerank_eval.rerankers.listwise.reranker import ListwiseLastToken

    original = ListwiseLastToken.score_prepared

    def one_nan(self, prepared):
        scores = original(self, prepared)
        scores[3][7] = np.nan
        return scores

    monkeypatch.setattr(ListwiseLastToken, "score_prepared", one_nan)
    out = tmp_path / "nan-out"
    result = run_cli(*command(checkpoint, run_file, out)[3:])
    assert result.exit_code == 2
    assert "gave a score that is not a finite number for query test3 of nq" in result.output
    assert not out.exists() and journal_lines(tmp_path / "cache") == []  # the whole chunk is dropped


def test_two_quick_sigints_exit_130_without_traceback(slow_setup):
    """Whether the second press lands mid-chunk or after a graceful stop, the exit is clean."""
    checkpoint, run_file, folder = slow_setup
    cache, out = folder / "cache-quick", folder / "quick-out"
    process = start_and_wait_for_journal(command(checkpoint, run_file, out), cache)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped at once" in stderr or "run the same command again to resume" in stderr
    assert_journal_valid_and_nothing_published(cache, out)


#: the console script over a stand-in for the command: it starts a thread that keeps torch busy (a
#: library's thread still in native code), prints a line left in Python's buffer, then stops as
#: argv[1] says
STOPPED_WITH_A_LIBRARY_THREAD = """
import importlib, sys, threading, time
import torch

def busy():
    states = torch.randn(256, 256)
    while True:
        states = (states @ states).tanh()

def command():
    threading.Thread(target=busy, daemon=True).start()
    time.sleep(0.2)
    print("printed before the stop")
    if sys.argv[1] == "press":
        raise KeyboardInterrupt
    raise SystemExit(int(sys.argv[1]))

app_module = importlib.import_module("rerank_eval.cli.app")
app_module.app = command
app_module.main()
"""


@pytest.mark.parametrize("stop", ["130", "143", "press"])
def test_a_stopped_run_exits_with_the_signals_code_while_library_threads_run(stop):
    """A stop is exit 130 (143 after SIGTERM), also when a press lands on the way out of a first stop
    (a KeyboardInterrupt escaping the command: no traceback, no death by signal), and also while a
    thread still runs torch: interpreter shutdown unwound such a thread and torch's error handlers
    aborted the process (exit 134). What the command printed still arrives, flushed."""
    buffered = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WITH_A_LIBRARY_THREAD, stop],
        capture_output=True,
        env=buffered,
        timeout=120,
    )
    assert done.returncode == (130 if stop == "press" else int(stop)), done.stderr.decode()
    assert done.stdout.decode() == "printed before the stop\n"
    assert done.stderr.decode() == ""


def test_ctrl_c_stops_within_one_forward_pass_and_the_resume_matches(slow_setup, monkeypatch):
    """A model that sleeps in every forward pass: Ctrl-C in the middle of a chunk of queries starts
    no other forward pass, the chunk is not journaled, and the resumed run writes the same bytes as
    an uninterrupted one."""
    from rerank_eval.rerankers.cross_encoder import CrossEncoder

    _, run_file, folder = slow_setup
    checkpoint = build_cross_encoder(folder / "ce-slow")
    args = ["beir", "--datasets", "nq", "--model", checkpoint, "--run", f"nq={run_file}",
            "--set", "max_batch_tokens=1500"]  # fmt: skip
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(folder / "cache-reference-ce"))
    assert run_cli(*args, "--out", folder / "ce-reference").exit_code == 0

    original = CrossEncoder.forward
    cache, out = folder / "cache-ce", folder / "ce-out"
    passes: list[str] = []  # what each forward pass was, relative to the Ctrl-C

    def slow(self, rows):
        stopped = "the one stopped in" in passes
        passes.append("after the stop" if stopped else "before the stop")
        if not stopped and journal_lines(cache) and passes.count("in the second chunk") < 2:
            passes[-1] = "in the second chunk"
        elif not stopped and journal_lines(cache):  # the third pass of the second chunk of 32 queries
            passes[-1] = "the one stopped in"
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        return original(self, rows)

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    monkeypatch.setattr(CrossEncoder, "forward", slow)
    result = run_cli(*args, "--out", out)
    assert result.exit_code == 130, result.output
    assert "stopping before the next forward pass" in result.output
    assert "interrupted; 32 of 48 queries of nq are journaled" in result.output
    assert passes[-1] == "the one stopped in" and "after the stop" not in passes
    assert len(journal_lines(cache)) == 32 and not out.exists()

    monkeypatch.setattr(CrossEncoder, "forward", original)
    resumed = run_cli(*args, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    for name in ("runs/nq.trec", "per_query.csv", "summary.csv"):
        assert (out / name).read_bytes() == (folder / "ce-reference" / name).read_bytes(), name


# -- the journal -----------------------------------------------------------------------------------


def test_sibling_journals_are_those_of_the_same_key_even_when_the_dataset_key_has_dots(tmp_path):
    from rerank_eval.pipeline.journal import sibling_journals

    names = ["ms.v2-aaaa.jsonl", "ms.v2-aaaa.rank0-of-2.jsonl", "ms.v2-aaaa.rank1-of-2.jsonl",
             "ms.v2-bbbb.jsonl", "ms.v2-bbbb.rank0-of-2.jsonl", "ms-aaaa.jsonl"]  # fmt: skip
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in sibling_journals(tmp_path / "ms.v2-aaaa.jsonl")] == names[1:3]
    assert [p.name for p in sibling_journals(tmp_path / "ms.v2-aaaa.rank1-of-2.jsonl")] == names[:2]
    (tmp_path / "ms.v2-aaaa.rank3-of-4.jsonl").symlink_to(tmp_path / "ms.v2-bbbb.jsonl")  # (never read)
    assert [p.name for p in sibling_journals(tmp_path / "ms.v2-aaaa.jsonl")] == names[1:3]


@pytest.mark.parametrize("world", [1, 2])
def test_fresh_discards_the_journals_other_process_counts_wrote_and_not_its_own_ranks(tmp_path, world):
    """Each rank of a --fresh run discards its own journal; the main rank also those of the same key
    written with another number of processes (a later resume would read them), never a journal
    this run's other ranks write, another key's, or a link's target."""
    from rerank_eval.pipeline.journal import ScoreJournal

    names = ["k.jsonl", "k.rank0-of-2.jsonl", "k.rank1-of-2.jsonl", "k.rank2-of-3.jsonl", "j.jsonl"]
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "k.rank0-of-4.jsonl").symlink_to(tmp_path / "j.jsonl")
    main = tmp_path / ("k.jsonl" if world == 1 else "k.rank0-of-2.jsonl")
    ScoreJournal(main).discard_other_process_counts(world)
    kept = {main.name, "j.jsonl", "k.rank0-of-4.jsonl"} | ({"k.rank1-of-2.jsonl"} if world == 2 else set())
    assert {p.name for p in tmp_path.iterdir()} == kept
    assert (tmp_path / "j.jsonl").is_file()


def test_a_stop_during_a_datasets_last_chunk_stops_before_the_next_dataset(tmp_path, monkeypatch):
    """Nothing is left to abandon in the first dataset, so the run stops before preparing the next."""
    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    runs = tmp_path / "runs"
    builders.write_run(runs / "scifact.trec", builders.SCIFACT_RUN)
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    original = FirstStageOrder.score_batch

    def stopped_while_scoring(self, requests):
        os.kill(os.getpid(), signal.SIGINT)  # the first dataset's one chunk finishes regardless
        return original(self, requests)

    monkeypatch.setattr(FirstStageOrder, "score_batch", stopped_while_scoring)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    result = run_cli("beir", "--datasets", "scifact,fiqa", "--model", "bm25", "--runs-dir", runs,
                     "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 130, result.output
    assert "error: interrupted before " in result.output
    assert len(list((tmp_path / "cache" / "journals").glob("*.jsonl"))) == 1
    assert not (tmp_path / "out").exists()


def test_a_stop_during_a_models_last_chunk_publishes_it_and_starts_no_other(tmp_path, monkeypatch):
    """Several models: a stop asked for while the first scores its last chunk lets it publish (its
    results are complete) and the next model is not loaded; the same command resumes."""
    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    runs = tmp_path / "runs"
    builders.write_run(runs / "scifact.trec", builders.SCIFACT_RUN)
    original = FirstStageOrder.score_batch

    def stopped_while_scoring(self, requests):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, requests)

    monkeypatch.setattr(FirstStageOrder, "score_batch", stopped_while_scoring)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = run_cli("beir", "--datasets", "scifact", "--model", "bm25", "--model", "minilm-bi",
                     "--runs-dir", runs, "--out", out)  # fmt: skip
    assert result.exit_code == 143, result.output
    assert "error: interrupted before model minilm-bi (the models before it are published); to resume: " in (
        result.output
    )
    assert (out / "bm25" / "manifest.json").is_file() and not (out / "minilm-bi").exists()


def test_journal_drops_a_truncated_tail_and_reports_damage(tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    journal = ScoreJournal(path)
    expected = {"a": ["d1", "d2"], "b": ["d3"], "c": ["d4"], "d": ["d5"]}
    journal.append(
        [("a", ["d1", "d2"], ScoredQuery(np.array([0.5, 0.25], dtype=np.float32), {"blocks": [2]}))]
    )
    journal.append([("b", ["d3"], ScoredQuery(np.array([0.1], dtype=np.float32)))])
    journal.close()
    with open(path, "ab") as handle:  # a stale entry, a corrupt line, then a crash mid-line
        handle.write(b'{"q": "c", "docs": ["other"], "scores": [1.0]}\n')
        handle.write(b"garbage\n")
        handle.write(b'{"q": ["c"], "docs": ["d4"], "scores": [1.0]}\n')  # well-formed JSON, wrong types
        handle.write(b'{"q": "c", "docs": ["d4"], "scores": "1"}\n')
        handle.write(b'{"q": "c", "docs": ["d4"], "scores": [NaN]}\n')
        handle.write(b'{"q": "c", "docs": ["d4"], "scores": [Infinity]}\n')
        handle.write(b'{"q": "c", "docs": ["d4"], "scores": [true]}\n')  # JSON's true is no score
        handle.write(b'{"q": "c", "docs": ["d4"], "scores": [1.0], "blocks": [true]}\n')
        handle.write(b'{"q": "d", "docs": ["d5"], "sco')
    loaded = ScoreJournal(path).load(expected)
    assert set(loaded) == {"a", "b"}
    assert loaded["a"].scores.tolist() == [0.5, 0.25] and loaded["a"].notes == {"blocks": [2]}
    assert loaded["b"].scores.tolist() == [np.float32(0.1)] and loaded["b"].notes == {}
    assert "8 unreadable or stale lines (first: line 3)" in capsys.readouterr().err
    assert path.read_bytes().count(b"\n") == 2 and path.read_bytes().endswith(b"\n")


def test_a_journal_shared_by_two_commands_is_rewritten_only_to_drop_damage(tmp_path, capsys):
    """Array jobs sharing a cache: a command loading a journal another one is appending to leaves
    it as it is where nothing needs dropping, closes a line cut short with a line break rather
    than a rewrite, and where it must rewrite (a damaged line), the other's next lines go to the
    rewritten file, not to the old one the rename unlinked."""
    path = tmp_path / "j.jsonl"
    expected = {q: [f"d{q}"] for q in "abcdef"}

    def entry(query: str) -> list:
        return [(query, [f"d{query}"], ScoredQuery(np.array([0.5], dtype=np.float32)))]

    first = ScoreJournal(path)
    first.append(entry("a"))
    inode = path.stat().st_ino
    assert set(ScoreJournal(path).load(expected)) == {"a"} and path.stat().st_ino == inode  # not rewritten
    first.append(entry("b"))
    with open(path, "ab") as handle:
        handle.write(b'{"q": "c", "docs": ["dc"], "sco')  # a line being written, or cut short
    assert set(ScoreJournal(path).load(expected)) == {"a", "b"} and path.stat().st_ino == inode
    first.append(entry("d"))  # starts a line of its own
    # the closed fragment is still known for a cut-short line: no warning, no rewrite
    assert set(ScoreJournal(path).load(expected)) == {"a", "b", "d"} and path.stat().st_ino == inode
    assert capsys.readouterr().err == ""
    with open(path, "ab") as handle:
        handle.write(b"garbage\n")
    assert set(ScoreJournal(path).load(expected)) == {"a", "b", "d"} and path.stat().st_ino != inode
    assert "1 unreadable or stale lines (first: line 5)" in capsys.readouterr().err  # garbage, not line 3
    first.append(entry("e"))  # after the rewrite: into the file now at the path
    first.close()
    assert set(ScoreJournal(path).load(expected)) == {"a", "b", "d", "e"}


def test_journal_write_on_a_full_disk_is_one_clear_error(tmp_path, monkeypatch):
    journal = ScoreJournal(tmp_path / "j.jsonl")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=r"no space left on device while writing .*j\.jsonl; 0 scored"):
        journal.append([("a", ["d"], ScoredQuery(np.array([0.1], dtype=np.float32)))])


def test_full_disk_while_publishing_leaves_no_complete_folder(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    from rerank_eval.results import folder as results

    real = results.write_atomic

    def fail_on_manifest(path, text):
        if path.name == "manifest.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(results, "write_atomic", fail_on_manifest)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", str(runs), "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "no space left on device while writing" in result.output
    assert not out.exists() and not out.with_name("out.incomplete").exists()


def test_changing_a_setting_never_reuses_scores(slow_setup, tmp_path):
    checkpoint, _, _ = slow_setup
    a = load_reranker(str(checkpoint))
    b = load_reranker(str(checkpoint), max_doc_length=100)
    c = load_reranker(str(checkpoint), max_batch_tokens=123)
    assert a.score_identity() != b.score_identity()
    assert a.score_identity() == c.score_identity()  # batching does not change scores
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    assert load_reranker(str(copy)).score_identity() == a.score_identity()  # same content, other path
    (copy / "extra.txt").write_text("changed")
    assert load_reranker(str(copy)).score_identity() != a.score_identity()


# -- bad input ---------------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_unknown_documents_and_duplicates_and_equal_scores_are_reported(tmp_path):
    run = tmp_path / "r.trec"
    run.write_text(
        "10 Q0 f2 1 1.0 t\n10 Q0 nosuchdoc 2 1.0 t\n10 Q0 f2 3 0.5 t\n"  # unknown doc, duplicate
        "11 Q0 f3 1 2.0 t\n11 Q0 f4 2 2.0 t\n"  # all scores equal
        "nosuchquery Q0 f1 1 1.0 t\n"  # a query without judgements
    )
    out = tmp_path / "out"
    result = run_cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={run}", "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 candidate document ids of fiqa are not in its corpus" in result.output
    assert "in 2 queries of fiqa all first-stage scores are equal" in result.output
    assert "warning: 1 duplicate (query, document) lines in the first-stage run of fiqa" in result.output
    assert "warning: 1 queries of the first-stage run of fiqa have no judgements" in result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]
    assert record["missing_documents"] == 1
    assert record["first_stage"]["duplicate_lines"] == 1
    assert record["coverage"]["queries_with_equal_scores"] == 2
    ranked = [line.split()[2] for line in (out / "runs" / "fiqa.trec").read_text().splitlines()]
    assert ranked == ["f2", "f4", "f3"]  # f4 before f3: equal scores, doc id descending


def test_empty_documents_are_reranked_and_counted(tmp_path):
    run = builders.write_run(tmp_path / "r.trec", {"1": {"s9": 3.0, "s1": 2.0}})
    out = tmp_path / "out"
    result = run_cli(
        "beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run}", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "1 candidate documents of scifact are empty or whitespace only" in result.output
    assert json.loads((out / "manifest.json").read_text())["datasets"][0]["empty_documents"] == 1


def test_long_documents_are_truncated_and_counted(slow_setup, tmp_path):
    checkpoint, _, _ = slow_setup
    runs = tmp_path / "runs"
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    out = tmp_path / "out"
    result = run_cli("beir", "--datasets", "fiqa", "--model", checkpoint, "--runs-dir", runs, "--out", out,
                     "--set", "max_doc_length=4", "--fresh")  # fmt: skip
    assert result.exit_code == 0, result.output
    execution = json.loads((out / "manifest.json").read_text())["datasets"][0]["timings"]["execution"]
    assert execution["truncated_documents"] == 5  # every candidate has more than 4 tokens
    assert "warning: 5 documents of fiqa were cut to the model's length limit" in result.output


def test_tied_reranked_scores_are_reported(tmp_path, monkeypatch):
    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    monkeypatch.setattr(FirstStageOrder, "score_batch", lambda self, rs: [np.zeros(len(r.texts)) for r in rs])
    monkeypatch.setattr(FirstStageOrder, "scores_its_own", True)  # as a model whose scores tie
    run = builders.write_run(tmp_path / "r.trec", builders.FIQA_RUN)
    out = tmp_path / "out"
    result = run_cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={run}", "--out", out,
                     "--fresh")  # fmt: skip
    assert result.exit_code == 0, result.output
    ties = sum(len(docs) - 1 for docs in builders.FIQA_RUN.values() if docs)
    assert f"warning: {ties} reranked scores of fiqa tie with the one ranked above" in result.output
    assert json.loads((out / "manifest.json").read_text())["datasets"][0]["tied_scores"] == ties


def test_the_first_stages_own_ties_are_not_warned_about(tmp_path):
    """`bm25` hands back the first stage's scores: their ties are the first stage's, kept in its order
    by definition; the count is still in the manifest."""
    tied = {query: dict.fromkeys(docs, 1.0) for query, docs in builders.FIQA_RUN.items()}
    run = builders.write_run(tmp_path / "r.trec", tied)
    out = tmp_path / "out"
    result = run_cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={run}", "--out", out)
    assert result.exit_code == 0, result.output
    assert "tie with the one ranked above" not in result.output
    assert json.loads((out / "manifest.json").read_text())["datasets"][0]["tied_scores"] > 0


def test_non_utf8_documents_file_for_score(slow_setup, tmp_path):
    checkpoint, _, _ = slow_setup
    bad = tmp_path / "docs.txt"
    bad.write_bytes(b"fine\n\xff\xfe broken\n")
    result = run_cli("score", "--model", checkpoint, "--query", "q", "--docs", bad)
    assert result.exit_code == 2
    assert f"{bad} is not valid UTF-8" in result.output


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("config.json", "has no config.json"),
        ("tokenizer.json", "cannot load the tokenizer of"),
        ("model.safetensors", "lacks projector weights (no .safetensors file)"),
    ],
)
def test_checkpoint_missing_files(slow_setup, tmp_path, remove, message):
    checkpoint, _, _ = slow_setup
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / remove).unlink()
    result = run_cli("score", "--model", broken, "--family", "listwise-last-token", "--query", "q",
                     "--docs", Path(__file__))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


# -- out of memory --------------------------------------------------------------------------------------


def oom_requests() -> list[RerankRequest]:
    docs = tuple(f"passage number {i} about aspirin and the heart" for i in range(6))
    return [
        RerankRequest(f"q{i}", f"query {i}", tuple(map(str, range(6))), docs, tuple(range(6)))
        for i in range(4)
    ]


def only_one_row_fits(monkeypatch, module: torch.nn.Module) -> None:
    """`module`'s forward runs out of memory on any batch of more than one row, as a GPU would."""
    forward = module.forward

    def limited(input_ids=None, **kwargs):
        if input_ids.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(module, "forward", limited)


def backed_off_to_the_same_scores(monkeypatch, folder: Path, requests: list, module: str):
    """The reranker of `folder` after scoring `requests` where only one row fits in its `module`:
    its scores checked equal to those scored a row at a time."""
    reference = load_reranker(str(folder), max_batch_tokens=1).score_batch(requests)
    reranker = load_reranker(str(folder), max_batch_tokens=100_000)
    only_one_row_fits(monkeypatch, getattr(reranker, module))
    for got, want in zip(score_with_backoff(reranker, requests), reference, strict=True):
        assert np.abs(got - want).max() <= 1e-5
    return reranker


def test_out_of_memory_halves_the_batch_and_keeps_scores(slow_setup, monkeypatch):
    checkpoint, _, _ = slow_setup
    reranker = backed_off_to_the_same_scores(monkeypatch, checkpoint, oom_requests(), "backbone")
    stats = reranker.runtime_stats()
    assert stats["out_of_memory_retries"] >= 1
    assert stats["max_batch_tokens"] < 100_000


def test_a_block_too_large_even_alone_names_the_query(slow_setup, monkeypatch):
    checkpoint, _, _ = slow_setup
    reranker = load_reranker(str(checkpoint))

    def never(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(reranker.backbone, "forward", never)
    with pytest.raises(
        UserError, match=r"query q\d: one block of \d+ tokens does not fit in GPU memory even alone"
    ) as raised:
        score_with_backoff(reranker, oom_requests())
    # the remedy in the library's words, and in the command line's
    assert "lower the setting context_length=... so blocks get shorter" in str(raised.value)
    assert "lower --set max_doc_length=..." in raised.value.render({"settings": "--set"})


# The CLI with bm25s' index save slowed down, so that two builds started together overlap.
SLOW_SAVE = """
import sys, time
import bm25s
saved = bm25s.BM25.save
def slowly(self, *args, **kwargs):
    saved(self, *args, **kwargs)
    time.sleep(1.0)
bm25s.BM25.save = slowly
sys.argv[0] = "rerank-eval"
from rerank_eval.cli import main
main()
"""


def test_commands_started_together_on_one_cache_build_its_bm25_index_and_agree(tmp_path):
    """Two commands sharing a cache, started at once, need the built-in BM25 index of a dataset
    never indexed: one builds it (in a folder of its own, renamed into place whole: a fixed
    `.building` name had one delete or rename the other's files), the other waits for it and loads
    it (both built it, side by side, before builds were claimed)."""
    env = {**os.environ, "RERANK_EVAL_CACHE": str(tmp_path / "cache")}
    args = ["beir", "--datasets", "fiqa", "--model", "bm25", "--first-stage", "bm25s", "--top-k", "5"]
    outs = [tmp_path / f"out{n}" for n in range(2)]
    started = [subprocess.Popen([sys.executable, "-c", SLOW_SAVE, *args, "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for out in outs]  # fmt: skip
    errors = [process.communicate(timeout=300)[1] for process in started]
    assert [process.returncode for process in started] == [0, 0], errors
    assert "Traceback" not in "".join(errors)
    assert (outs[0] / "per_query.csv").read_bytes() == (outs[1] / "per_query.csv").read_bytes()
    assert "".join(errors).count("building the BM25 index of beir/fiqa") == 1
    index = [p for p in (tmp_path / "cache" / "bm25s").iterdir() if p.suffix != ".lock"]
    assert len(index) == 1 and (index[0] / "doc_ids.json").is_file()
