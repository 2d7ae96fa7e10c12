"""Processes sharing one cache share its work: a corpus shard or an index is built by one of them.

Claims are flocks, which conflict between two opens of a file even within one process, so a claim
held by the test stands for another process's here; the end-to-end cases with real processes
(two commands at once, a claimer killed) are in test_dense_first_stage.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rerank_eval.cache import building_claim, claim, process_tag, release
from rerank_eval.errors import UserError
from rerank_eval.first_stage import bm25_index as bm25
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings, Shard
from rerank_eval.first_stage.dense.encoding import encode_corpus
from rerank_eval.pipeline.journal import ScoredQuery, ScoreJournal

DOCUMENTS = [(f"d{i}", "a" * i + "b") for i in range(6)]  # shards of two: 0, 1, 2


class _LengthEncoder:
    """A text's vector is (its length, its number of 'a's); the texts encoded are recorded."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def tokenize(self, texts: list[str], side: str) -> list[str]:
        return list(texts)

    def made_with(self) -> dict[str, str]:
        return {"device": "lengths"}

    def queue_tokens(self, rows: list[str], side: str, progress=None):
        self.encoded.extend(rows)
        vectors = np.array([[len(t), t.count("a")] for t in rows], np.float32)

        class Queued:
            def result(self) -> np.ndarray:
                return vectors

        return Queued()


def _in_a_thread(work) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # (handed to the test)
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _encoding_with_shard_1_claimed(tmp_path, capsys):
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    held = cache.claim_shard(1)
    assert held is not None
    encoder = _LengthEncoder()
    thread, outcome = _in_a_thread(lambda: encode_corpus(cache, iter(DOCUMENTS), 6, encoder))
    # shard 1 was passed over for shard 2, which is written; the encoding then waits for shard 1
    said = [""]

    def waiting() -> bool:
        if {0, 2} <= _written(cache):
            said[0] += capsys.readouterr().err
        return "waiting" in said[0] and said[0].endswith("\n")  # (the line and its end are two writes)

    _until(waiting, "no wait")
    # the shards still unwritten when the wait begins, and who holds them (here, this process)
    assert said[0] == f"waiting for the 1 shard process {process_tag()} is encoding into {cache.folder}\n"
    assert thread.is_alive()
    return cache, held, encoder, thread, outcome


def _written(cache: CorpusEmbeddings) -> set[int]:
    return {int(p.name[6:12]) for p in cache.folder.glob("shard-*.npy")}


def test_a_shard_another_process_claimed_is_waited_for_and_not_encoded_again(tmp_path, capsys):
    cache, held, encoder, thread, outcome = _encoding_with_shard_1_claimed(tmp_path, capsys)
    theirs = np.array([[7, 7], [7, 7]], np.float32)  # what the other process wrote
    cache.write_shard(Shard.of(1, DOCUMENTS[2:4]), theirs)
    release(held)
    thread.join(30)
    report = outcome["value"]
    assert report.left_unwritten == [] and report.shards == 3 and report.documents == 6
    assert encoder.encoded == [DOCUMENTS[i][1] for i in (0, 1, 4, 5)]  # never shard 1's
    assert report.encoded_passages == 4
    assert np.array_equal(cache.shard(1), theirs)


def test_a_shard_whose_claimer_ended_without_writing_it_is_encoded_by_another_read(tmp_path, capsys):
    cache, held, _, thread, outcome = _encoding_with_shard_1_claimed(tmp_path, capsys)
    release(held)  # (as a process killed before it wrote the shard: its flock ends with it)
    thread.join(30)
    assert outcome["value"].left_unwritten == [1]
    assert _written(cache) == {0, 2}
    again = _LengthEncoder()
    report = encode_corpus(cache, iter(DOCUMENTS), 6, again)  # what ensure_corpus then runs
    assert report.left_unwritten == [] and again.encoded == [DOCUMENTS[2][1], DOCUMENTS[3][1]]
    assert np.array_equal(cache.shard(1), np.array([[3, 2], [4, 3]], np.float32))


def test_a_refused_corpus_leaves_no_claims_behind(tmp_path):
    """The cache folder of a corpus refused before any shard was written goes with its claims."""
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    release(cache.claim_shard(0))
    cache.discard_if_unused()
    assert not cache.folder.exists()


def test_a_build_another_process_holds_is_waited_for_and_loaded_not_built_again(tmp_path, capsys):
    """The build of an index another process is building is waited for; the folder it built is
    then found (`needed` False), where each used to build its own and keep the last renamed."""
    folder = tmp_path / "lucene" / "corpus-1234"
    with building_claim(folder, "the index of x") as needed:
        assert needed
        thread, outcome = _in_a_thread(lambda: _enter(building_claim(folder, "the index of x")))
        _until(lambda: " that builds the index of x" in capsys.readouterr().err,
               "no wait")  # fmt: skip
        assert thread.is_alive()
        folder.mkdir()
    thread.join(30)
    assert outcome["value"] is False


def _enter(context) -> bool:
    with context as needed:
        return needed


def test_the_built_in_bm25_index_is_built_by_one_of_two_processes(tmp_path, monkeypatch, capsys):
    """`Bm25Index.open` waits for another process's build of the same index and loads it."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets.ir_dataset import IrDataset

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    spec = next(d for d in load_config().suite("beir").datasets if d.key == "scifact")
    dataset, settings = IrDataset(spec), bm25.Bm25Settings(language="en")
    folder = bm25.Bm25Index.cache_dir(dataset, settings)
    builds = []
    build = bm25.Bm25Index._build
    monkeypatch.setattr(bm25.Bm25Index, "_build", lambda *a: (builds.append(a), build(*a)))
    folder.parent.mkdir(parents=True)
    held = claim(folder.with_name(f"{folder.name}.lock"))
    thread, outcome = _in_a_thread(lambda: bm25.Bm25Index.open(dataset, settings))
    _until(lambda: " that builds the BM25 index" in capsys.readouterr().err,
           "no wait")  # fmt: skip
    build(dataset, settings, folder)  # the other process's build
    release(held)
    thread.join(60)
    assert builds == []
    assert outcome["value"].doc_ids == [doc_id for doc_id, _ in dataset.iter_documents()]


@pytest.mark.parametrize("wait", [False, True])
def test_a_claim_ends_with_its_holder(tmp_path, wait):
    path = tmp_path / "x.lock"
    held = claim(path)
    assert claim(path) is None  # held: another open cannot take it
    release(held)
    again = claim(path, wait=wait)
    assert again is not None
    release(again)


def _built_once_by_two_at_once(monkeypatch, capsys, module, builder: str, obtain, waiting: str) -> None:
    """Two threads need one cached build at once (as two processes would: their claims are two
    opens): the first's build, patched to wait, holds the claim; the second says `waiting` and, once
    the build is done, finds it and does not build. Both get the same folder."""
    entered, go, builds = threading.Event(), threading.Event(), []

    def one_build(*args):
        folder = next(a for a in args if isinstance(a, Path))  # (the one folder each is given)
        builds.append(folder)
        entered.set()
        assert go.wait(30)
        folder.mkdir()

    monkeypatch.setattr(module, builder, one_build)
    first, first_outcome = _in_a_thread(obtain)
    assert entered.wait(30)
    second, second_outcome = _in_a_thread(obtain)
    _until(lambda: waiting in capsys.readouterr().err, "no wait")
    go.set()
    first.join(30), second.join(30)
    assert len(builds) == 1
    assert first_outcome.keys() == second_outcome.keys() == {"value"}


def test_a_lucene_index_needed_by_two_at_once_is_built_once(tmp_path, monkeypatch, capsys):
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets import open_dataset
    from rerank_eval.first_stage import lucene_index

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_index.lucene_runtime, "versions", lambda: {"anserini": "test"})
    dataset = open_dataset(load_config().suite("miracl").select(["ar"])[0])
    settings = lucene_index.LuceneSettings(0.9, 0.4, "ar", "language")
    _built_once_by_two_at_once(
        monkeypatch, capsys, lucene_index, "_build", lambda: lucene_index.index_folder(dataset, settings),
        " that builds the Lucene index of miracl/ar/dev",
    )  # fmt: skip


def test_a_local_doc_store_needed_by_two_at_once_is_built_once(tmp_path, monkeypatch, capsys):
    from rerank_eval.config.reader import load_config
    from rerank_eval.datasets import local, open_dataset

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "corpus.tsv").write_text("d1\tt\tx\n")
    (tmp_path / "queries.tsv").write_text("q1\tx\n")
    (tmp_path / "qrels.txt").write_text("q1 0 d1 1\n")
    config = tmp_path / "local.yaml"
    config.write_text(
        "suites:\n  local:\n    datasets:\n"
        "      - {key: plain, corpus: corpus.tsv, queries: queries.tsv, qrels: qrels.txt}\n"
    )
    dataset = open_dataset(load_config(config).suite("local").datasets[0])
    _built_once_by_two_at_once(
        monkeypatch, capsys, local, "build_in_place", dataset._store,
        " that builds the document store of",
    )  # fmt: skip


def test_an_encoding_stopped_by_an_error_leaves_no_claim_to_its_own_process(tmp_path):
    """A claim is a flock of one open file: one left open by a failed encoding (the shard the
    reader had claimed ahead) would be "another process's" to the next encoding of the same corpus
    in this process, which would wait on itself for ever (a run of several datasets sharing it)."""

    class FailingAtShard1(_LengthEncoder):
        def queue_tokens(self, rows, side, progress=None):
            if rows == [DOCUMENTS[2][1], DOCUMENTS[3][1]]:
                raise RuntimeError("the device is gone")
            return super().queue_tokens(rows, side)

    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    with pytest.raises(RuntimeError, match="the device is gone"):
        encode_corpus(cache, iter(DOCUMENTS), 6, FailingAtShard1())
    thread, outcome = _in_a_thread(lambda: encode_corpus(cache, iter(DOCUMENTS), 6, _LengthEncoder()))
    thread.join(30)
    assert not thread.is_alive(), "the encoding waits for a claim of its own process"
    assert outcome["value"].left_unwritten == [] and _written(cache) == {0, 1, 2}


def test_an_interrupt_while_waiting_for_a_claim_leaves_nothing_open(tmp_path):
    import os
    import signal

    path = tmp_path / "x.lock"
    held = claim(path)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    descriptors = len(os.listdir("/proc/self/fd"))
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            claim(path, wait=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(os.listdir("/proc/self/fd")) == descriptors
    release(held)


def test_a_corpus_folder_another_process_holds_a_claim_in_is_not_discarded(tmp_path):
    cache = CorpusEmbeddings(tmp_path / "corpus", 2, "float32")
    cache.create({"test": 1})
    release(cache.claim_shard(0))
    held = cache.claim_shard(1)  # another process's, encoding shard 1
    cache.discard_if_unused()
    assert sorted(p.name for p in cache.folder.iterdir()) == [
        "claim-000000.lock",
        "claim-000001.lock",
        "key.json",
    ]
    release(held)
    cache.discard_if_unused()
    assert not cache.folder.exists()


def test_a_file_system_without_locks_grants_every_claim_and_says_so_once(tmp_path, monkeypatch, capsys):
    import errno

    from rerank_eval import cache

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cache.fcntl, "flock", no_locks)
    first, second = claim(tmp_path / "a.lock"), claim(tmp_path / "b.lock", wait=True)
    assert first == second == cache.UNLOCKED
    assert capsys.readouterr().err == (
        f"note: {tmp_path} cannot be locked (a file system without locks); commands sharing it at once "
        f"each do all of the work\n"
    )


def _linked_to_a_file_outside(at: Path, tmp_path: Path) -> Path:
    """A file of the user's outside the cache, and a symbolic link to it at `at`: what another user
    sharing the cache could put under the name of a file the next command writes."""
    outside = tmp_path / "outside" / "notes.txt"
    outside.parent.mkdir()
    outside.write_text("the user's own\n")
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(outside)
    return outside


def _first_temporary_name_taken(path: Path, tmp_path: Path, monkeypatch) -> Path:
    """The first name a temporary file of `path` is given made a link to a file of the user's (as
    another user, or another container with this process's tag, could have it), the next free."""
    import secrets

    names = iter(["aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda size: next(names))
    return _linked_to_a_file_outside(path.with_name(f"{path.name}.{process_tag()}-aaaaaaaa.tmp"), tmp_path)


def test_a_temporary_file_is_made_where_no_file_was(tmp_path, monkeypatch):
    from rerank_eval.first_stage.dense.corpus import write_file

    path = tmp_path / "cache" / "corpus" / "key.json"
    outside = _first_temporary_name_taken(path, tmp_path, monkeypatch)
    write_file(path, lambda handle: handle.write(b"{}"))
    assert path.read_bytes() == b"{}" and not path.is_symlink()
    assert outside.read_text() == "the user's own\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "key.json",
        f"key.json.{process_tag()}-aaaaaaaa.tmp",
    ]


def test_a_link_under_a_lock_files_name_is_refused_not_written_through(tmp_path):
    folder = tmp_path / "cache" / "bm25" / "index"
    outside = _linked_to_a_file_outside(folder.with_name("index.lock"), tmp_path)
    with pytest.raises(UserError) as raised:
        with building_claim(folder, "the index"):
            pass
    assert str(raised.value) == (
        f"Too many levels of symbolic links while writing {folder.with_name('index.lock')}; nothing was built"
    )
    assert outside.read_text() == "the user's own\n"


@pytest.mark.parametrize("planted", ["journal", "a named pipe", "its temporary file"])
def test_a_link_in_place_of_a_journal_is_replaced_not_read_or_written_through(
    tmp_path, planted, capsys, monkeypatch
):
    path = tmp_path / "cache" / "journals" / "scifact-0123.jsonl"
    journal = ScoreJournal(path)
    if planted == "journal":
        outside = _linked_to_a_file_outside(path, tmp_path)
    elif planted == "a named pipe":  # (read, it would wait for a writer for ever)
        outside = _linked_to_a_file_outside(tmp_path / "elsewhere", tmp_path)
        path.parent.mkdir(parents=True)
        os.mkfifo(path)
    else:  # with a damaged line, so that loading the journal rewrites it through its temporary file
        outside = _first_temporary_name_taken(path, tmp_path, monkeypatch)
        path.write_text('{"q": "1", "docs": ["a"], "scores": [0.5]}\nnot a record\n')
    kept = journal.load({"1": ["a"]})
    journal.append([("2", ["a"], ScoredQuery(np.array([0.25])))])
    journal.close()
    assert outside.read_text() == "the user's own\n"
    assert not path.is_symlink()
    assert [json.loads(line)["q"] for line in path.read_text().splitlines()] == [*kept, "2"]
    expected = "has 1 unreadable or stale lines" if planted == "its temporary file" else "is not a file"
    assert f"warning: journal {path} {expected}" in capsys.readouterr().err


def test_what_killed_writes_left_beside_journals_and_dense_runs_is_removed(tmp_path):
    """A kill between writing a journal's rewrite or a dense run and renaming it left its temporary
    file for good (corpus folders alone were cleared); a live process's stays."""
    import subprocess

    from rerank_eval.first_stage.dense.run_cache import write_run

    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs
    dead = f"{process_tag().partition('-')[0]}-{gone.pid}.tmp"
    journals, runs = tmp_path / "journals", tmp_path / "runs"
    for folder in (journals, runs):
        folder.mkdir()
        (folder / f"left.{dead}").write_text("half")
        (folder / f"live.{process_tag()}.tmp").write_text("being written")
    ScoreJournal(journals / "scifact-0123.jsonl").load({})
    write_run(runs / "scifact.trec", {"q1": {"d1": 0.5}}, {"corpus_documents": 1})
    assert sorted(p.name for p in journals.iterdir()) == [f"live.{process_tag()}.tmp"]
    assert sorted(p.name for p in runs.iterdir()) == [
        f"live.{process_tag()}.tmp",
        "scifact.json",
        "scifact.trec",
    ]


def _gone_pid() -> int:
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid  # a process id that no longer runs


@pytest.mark.skipif(not Path("/proc/self/ns/pid").exists(), reason="no process-id namespaces here")
def test_another_containers_processes_are_not_judged_by_this_one():
    """Containers on one machine may share its host name while each numbers its processes from 1:
    a process id another one wrote names nothing this one can look up."""
    import socket

    from rerank_eval.cache import left_by_a_dead_process

    pid = _gone_pid()
    same_name = socket.gethostname().replace("-", "_").replace(".", "_")
    assert left_by_a_dead_process(f"{process_tag().partition('-')[0]}-{pid}")
    assert not left_by_a_dead_process(f"{same_name}-{pid}")  # (the host's own namespace, or none)
    assert not left_by_a_dead_process(f"{same_name}_1-{pid}")


def test_a_dead_temporary_that_cannot_be_removed_leaves_the_others_removed(tmp_path, monkeypatch):
    """Another user's file in a folder with the sticky bit cannot be removed: the clearing goes on."""
    from rerank_eval.cache import remove_dead_temporaries

    host = process_tag().partition("-")[0]
    names = [f"a.{host}-{_gone_pid()}-00000000.tmp", f"b.{host}-{_gone_pid()}-00000000.tmp"]
    for name in names:
        (tmp_path / name).write_text("half")
    unlink = Path.unlink

    def refused_for_a(path, missing_ok=False):
        if path.name.startswith("a."):
            raise PermissionError(1, "Operation not permitted")
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refused_for_a)
    remove_dead_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[0]]


def test_a_temporary_named_with_other_digits_than_a_process_id_is_left_alone(tmp_path):
    """`x.HOST-²-....tmp`, which anyone sharing the cache can make: str.isdigit() took the
    superscript and int() refused it, and every run that cleared temporaries ended in a traceback."""
    from rerank_eval.cache import remove_dead_temporaries

    host = process_tag().partition("-")[0]
    names = [f"a.{host}-\u00b2-0.tmp", f"b.{host}-\u0661\u0662-0.tmp", f"c.{host}-{'9' * 5000}-0.tmp"]
    for name in names[:2]:
        (tmp_path / name).write_text("planted")
    remove_dead_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:2])
    from rerank_eval.cache import left_by_a_dead_process

    assert not left_by_a_dead_process(names[2].removeprefix("c.").removesuffix("-0.tmp"))


def test_a_link_under_a_doc_store_lock_files_name_is_one_line(tmp_path):
    from types import SimpleNamespace

    from rerank_eval.datasets.docstore import docstore_lock

    store = SimpleNamespace(path=str(tmp_path / "ir_datasets" / "vaswani" / "docs.pklz4"))
    lock = Path(f"{store.path}.rerank-eval.lock")
    outside = _linked_to_a_file_outside(lock, tmp_path)
    with pytest.raises(UserError) as raised:
        with docstore_lock(store, "waiting"):
            pass
    assert str(raised.value) == f"Too many levels of symbolic links while writing {lock}; nothing was built"
    assert outside.read_text() == "the user's own\n"


def test_a_host_name_with_hyphens_still_names_its_dead_processes(tmp_path, monkeypatch):
    """A tag is split at its first hyphen (`HOST-PID-...`): a cluster node's name such as
    `node-07.cluster` is written with underscores, or what its killed writes left would never be
    recognised as its own and never removed."""
    import socket

    from rerank_eval.cache import left_by_a_dead_process, remove_dead_temporaries

    monkeypatch.setattr(socket, "gethostname", lambda: "node-07.cluster")
    tag = process_tag()
    assert tag.partition("-")[2] == str(os.getpid()) and "node_07_cluster" in tag
    dead = f"{tag.rpartition('-')[0]}-{_gone_pid()}"
    assert left_by_a_dead_process(dead)
    left = tmp_path / f"j.jsonl.{dead}-ab12cd34.tmp"
    left.write_text("x")
    remove_dead_temporaries(tmp_path)
    assert not left.exists()


def test_another_users_process_is_alive(monkeypatch):
    """Signalling another user's process is refused (PermissionError): it runs, and its files are
    not removed as a dead process's."""
    from rerank_eval import cache

    def refused(pid, signal):
        raise PermissionError(pid)

    monkeypatch.setattr(os, "kill", refused)
    assert not cache.left_by_a_dead_process(f"{process_tag().partition('-')[0]}-4194304")


def test_a_claim_records_its_holder_alone_and_waiters_name_every_holder(tmp_path):
    """A lock file keeps the last holder's tag; a shorter tag written over a longer one leaves none
    of the longer one behind. Several holders are named together."""
    from rerank_eval.cache import claims_holders

    first, second = tmp_path / "a.lock", tmp_path / "b.lock"
    first.write_text("an_earlier_holder_with_a_much_longer_tag-123456")
    second.write_text("other_host-42")
    held = claim(first)
    try:
        assert first.read_text() == process_tag()
        assert claims_holders([first]) == f"process {process_tag()}"
        both = ", ".join(sorted([process_tag(), "other_host-42"]))
        assert claims_holders([first, second]) == f"processes {both}"
    finally:
        release(held)


def test_a_build_another_process_completed_first_is_kept_without_an_error(tmp_path):
    """Two processes built the same folder (no claim between them): the second's rename fails on the
    first's folder, which is what was wanted; its own build is removed and nothing is refused."""
    from rerank_eval.cache import build_in_place

    folder = tmp_path / "index"

    def built_while_another_finished(building: Path) -> None:
        (building / "mine").write_text("second")
        folder.mkdir()
        (folder / "theirs").write_text("first")

    build_in_place(folder, built_while_another_finished, "index")
    assert [p.name for p in folder.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["index"]
