"""Rules of the ir_datasets reader, its doc stores and the stop handlers, checked one by one (fast).

What a dataset gives (texts, graded judgements), where its errors point, how a doc store is
cleared, locked and built, and what the first and second Ctrl-C (or SIGTERM) do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import pytest
from ir_datasets.formats import GenericDoc
from ir_datasets.indices.lz4_pickle import PickleLz4FullStore

from rerank_eval.cache import process_tag
from rerank_eval.config.schema import DatasetSpec
from rerank_eval.datasets import docstore
from rerank_eval.datasets import ir_dataset as ird
from rerank_eval.errors import MissingDownload, UserError
from rerank_eval.pipeline.interrupt import Interrupted, StopRequest, ending_at_once
from tests import builders

HOME = Path(os.environ["IR_DATASETS_HOME"])


def spec(key: str, dataset_id: str) -> DatasetSpec:
    return DatasetSpec(key, dataset_id, "en", None, False, True)


# -- what a dataset gives --------------------------------------------------------------------------


def test_a_document_is_its_title_a_space_and_its_text_or_its_text_alone():
    beir = namedtuple("BeirDoc", "doc_id text title")  # BEIR's order: text before title
    miracl = namedtuple("MiraclDoc", "doc_id title text")
    untitled = namedtuple("FiqaDoc", "doc_id text")
    assert ird.document_text(beir("d", "the text", "The Title")) == "The Title the text"
    assert ird.document_text(miracl("d", "The Title", "the text")) == "The Title the text"
    assert ird.document_text(beir("d", "the text", "")) == "the text"
    assert ird.document_text(untitled("d", "the text")) == "the text"


def test_scifact_gives_its_judged_queries_graded_judgements_and_titled_texts():
    dataset = ird.IrDataset(spec("scifact", "beir/scifact/test"))
    judged = builders.SCIFACT_QRELS
    assert dataset.queries() == {q: builders.SCIFACT_QUERIES[q] for q in judged}
    assert dataset.qrels() == judged  # grades kept (2 and 1), every judged document of a query
    expected = {}
    for doc_id in ("s1", "s4", "s9"):
        title, text = builders.SCIFACT_DOCS[doc_id]
        expected[doc_id] = title + " " + text if title else text
    assert dataset.documents(["s1", "s4", "s9", "not-in-the-corpus"]) == expected
    assert dataset.identity() == "beir/scifact/test"


def test_datasets_that_share_a_corpus_share_its_id():
    assert ird.IrDataset(spec("scifact", "beir/scifact/test")).corpus_id() == "beir/scifact"
    assert ird.IrDataset(spec("sw", "miracl/sw/dev")).corpus_id() == "miracl/sw"


def test_an_unknown_dataset_id_is_one_line_naming_it_and_its_key():
    with pytest.raises(UserError) as raised:
        ird.IrDataset(spec("mine", "no-such/dataset"))
    assert str(raised.value) == "ir_datasets has no dataset 'no-such/dataset' (dataset mine)"


# -- where its errors point ------------------------------------------------------------------------


def test_a_dataset_of_two_parts_or_with_its_own_folder_is_pointed_to_there(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path))
    (tmp_path / "beir" / "scifact").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    assert ird.dataset_folder("beir/scifact") == tmp_path / "beir" / "scifact"
    assert ird.dataset_folder("a/b/c") == tmp_path / "a" / "b" / "c"


def failure_of(exc: BaseException, dataset_id: str = "beir/scifact/test", key: str = "sci") -> UserError:
    with pytest.raises(UserError) as raised:
        with ird._ir_datasets_errors_explained(dataset_id, key):
            raise exc
    return raised.value


def test_a_user_error_inside_ir_datasets_use_is_passed_on_as_it_is():
    mine = UserError("no space left on device while writing x; nothing was built")
    assert failure_of(mine) is mine


def test_a_damaged_dataset_names_the_fetch_of_its_key_in_the_suite():
    message = str(failure_of(ValueError("bad gzip"), "beir/scifact/test", "sci"))
    assert message.startswith("cannot read beir/scifact/test (ValueError: bad gzip); its files under ")
    assert message.endswith(
        "run `rerank-eval fetch SUITE --datasets sci` (SUITE and --config as in the run) again"
    )


def test_a_refused_connection_outside_a_download_is_a_missing_download_of_the_whole_home():
    error = failure_of(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(error, MissingDownload)
    assert (
        error.problem
        == "cannot download beir/scifact/test through ir_datasets (its download hosts cannot be reached)"
    )
    assert (error.item, error.cache, error.variable, error.alternative) == (
        "dataset beir/scifact/test",
        str(HOME),
        "IR_DATASETS_HOME",
        "",
    )


def test_the_reason_of_a_failed_download_is_its_last_mirrors():
    tried = RuntimeError(
        "download failed", [("mirror-1", ValueError("HTTP 404")), ("mirror-2", ConnectionError())]
    )
    assert ird._reason(tried) == "its download hosts cannot be reached"


# -- a doc store: cleared, locked and built --------------------------------------------------------


class FakeStore:
    """A doc store that says what happens to it (in `events`)."""

    def __init__(self, events: list[str], built: bool = False) -> None:
        self.events, self.path, self._built = events, "/nowhere/docs.pklz4", built

    def built(self) -> bool:
        return self._built

    def build(self) -> None:
        self.events.append("build")
        self._built = True

    def get_many(self, doc_ids):
        self.events.append("look up")
        Doc = namedtuple("Doc", "doc_id text title")
        return {doc_id: Doc(doc_id, f"text {doc_id}", "") for doc_id in doc_ids}


def dataset_over(store: FakeStore, monkeypatch, count: int | None = 9, cleared: Path | None = None):
    """An IrDataset whose doc store is `store`, taken for an lz4 one, with the lock and the clearing
    recorded in the store's events."""
    events = store.events

    @contextlib.contextmanager
    def lock(store_, waiting):
        events.append("lock")
        try:
            yield
        finally:
            events.append("unlock")

    def clear(store_):
        events.append("clear")
        return cleared

    monkeypatch.setattr(ird, "lz4_store", lambda s: True)
    monkeypatch.setattr(ird, "docstore_lock", lock)
    monkeypatch.setattr(ird, "clear_interrupted_docstore", clear)
    dataset = object.__new__(ird.IrDataset)
    dataset.id, dataset.spec = "beir/x/test", spec("x", "beir/x/test")
    dataset._dataset = SimpleNamespace(
        docs_store=lambda: store, docs_count=lambda: count, docs_iter=lambda: iter(())
    )
    return dataset


def test_a_doc_store_is_cleared_and_built_under_the_lock_before_any_look_up(monkeypatch, capsys):
    events: list[str] = []
    dataset = dataset_over(FakeStore(events), monkeypatch)
    assert dataset.documents(["a"]) == {"a": "text a"}
    assert events == ["lock", "clear", "build", "unlock", "look up"]
    assert "first use of beir/x/test: ir_datasets builds its document store once" in capsys.readouterr().err


def test_streaming_a_corpus_clears_a_cut_short_store_first_and_says_so(monkeypatch, capsys):
    events: list[str] = []
    folder = Path("/nowhere/docs.pklz4")
    dataset = dataset_over(FakeStore(events, built=True), monkeypatch, cleared=folder)
    assert list(dataset.iter_documents()) == []
    assert events == ["lock", "clear", "unlock"]  # (ir_datasets builds it while streaming)
    err = capsys.readouterr().err
    assert err == f"beir/x/test: the document store in {folder} was cut short (an interrupted build)\n"
    events.clear()
    dataset = dataset_over(FakeStore(events, built=True), monkeypatch, cleared=None)
    dataset.documents(["a"])
    assert capsys.readouterr().err == ""  # nothing cleared, nothing to build: nothing said


@pytest.mark.parametrize(
    ("count", "cost"),
    [
        (8_400_000, "8,400,000 documents, about 2 min and roughly the corpus size on disk"),
        (1000, "1,000 documents, under a minute and roughly the corpus size on disk"),
        (None, "size unknown"),
    ],
)
def test_the_first_build_of_a_doc_store_is_announced_with_its_cost(monkeypatch, capsys, count, cost):
    dataset = dataset_over(FakeStore([]), monkeypatch, count=count)
    dataset.documents(["a"])
    assert capsys.readouterr().err == (
        f"first use of beir/x/test: ir_datasets builds its document store once ({cost}); "
        f"later runs reuse it from {HOME}\n"
    )


def real_store(folder: Path, indexed: tuple[str, ...] = ("doc_id",)) -> PickleLz4FullStore:
    """ir_datasets' own lz4 store of 20 documents, indexed on `indexed`."""

    def docs():
        return (GenericDoc(f"d{i}", f"text {i}") for i in range(20))

    return PickleLz4FullStore(str(folder), docs, GenericDoc, "doc_id", list(indexed))


def cut_short(folder: Path) -> None:
    """What a build killed between ir_datasets' two commits leaves (data, positions, no index)."""
    real_store(folder).build()
    for index_file in folder.glob("idx.*"):
        index_file.unlink()


def test_lz4_stores_alone_are_built_under_rerank_evals_lock(tmp_path):
    assert docstore.lz4_store(real_store(tmp_path / "docs.pklz4"))
    assert not docstore.lz4_store(SimpleNamespace(path=str(tmp_path / "other")))


def test_a_cleared_store_leaves_nothing_beside_it_nor_an_open_file(tmp_path):
    folder = tmp_path / "docs.pklz4"
    cut_short(folder)
    before = len(os.listdir("/proc/self/fd"))
    assert docstore.clear_interrupted_docstore(real_store(folder)) == folder
    assert len(os.listdir("/proc/self/fd")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the store and what was set aside: gone


def test_a_clearing_cut_short_leaves_the_store_set_aside_under_this_process_name(tmp_path, monkeypatch):
    """The store is moved aside whole before it is deleted: a kill during the deletion leaves no
    half-deleted store in place, and what it leaves names its process (for the next clearing)."""
    folder = tmp_path / "docs.pklz4"
    cut_short(folder)
    monkeypatch.setattr(docstore.shutil, "rmtree", lambda *a, **k: None)  # killed before deleting
    assert docstore.clear_interrupted_docstore(real_store(folder)) == folder
    assert [p.name for p in tmp_path.iterdir()] == [f"docs.pklz4{docstore.ASIDE}{process_tag()}"]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_what_a_killed_clearing_set_aside_is_removed_and_a_running_ones_kept(tmp_path):
    host = process_tag().rpartition("-")[0]
    dead = tmp_path / f"docs.pklz4{docstore.ASIDE}{host}-{dead_pid()}"
    running = tmp_path / f"docs.pklz4{docstore.ASIDE}{process_tag()}"
    for left in (dead, running):
        (left / "bin").parent.mkdir()
        (left / "bin").write_bytes(b"half")
    real_store(tmp_path / "docs.pklz4").build()
    assert docstore.clear_interrupted_docstore(real_store(tmp_path / "docs.pklz4")) is None  # whole
    assert not dead.exists() and (running / "bin").is_file()


def test_a_store_folder_without_data_is_kept_as_it_is(tmp_path):
    folder = tmp_path / "docs.pklz4"
    folder.mkdir()
    (folder / "bin.pos").write_bytes(b"")
    assert docstore.clear_interrupted_docstore(real_store(folder)) is None
    assert sorted(p.name for p in folder.iterdir()) == ["bin.pos"]


def test_a_store_whose_second_index_lacks_its_meta_is_cut_short(tmp_path):
    folder = tmp_path / "docs.pklz4"
    real_store(folder, ("doc_id", "text")).build()
    (folder / "idx.text.meta").unlink()  # killed after the first index's commit
    store = real_store(folder, ("doc_id", "text"))
    assert docstore.clear_interrupted_docstore(store) == folder


LOCKER = """
import fcntl, os, sys
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
kind = fcntl.LOCK_SH if sys.argv[2] == "shared" else fcntl.LOCK_EX
try:
    fcntl.lockf(handle, kind | fcntl.LOCK_NB)
except OSError:
    print("refused", flush=True)
    sys.exit()
print("locked", flush=True)
sys.stdin.readline()
"""


def lock_holder(path: Path, kind: str = "exclusive") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_the_build_lock_sits_beside_the_store_for_all_users_and_ends_with_its_block(tmp_path):
    store = SimpleNamespace(path=str(tmp_path / "fresh" / "beir" / "docs.pklz4"))  # no folder yet
    lock = Path(f"{store.path}.rerank-eval.lock")
    umask = os.umask(0o002)
    try:
        with docstore.docstore_lock(store, "waiting"):
            assert lock.is_file()
            holder = lock_holder(lock)
            assert holder.communicate(timeout=30)[0] == "refused\n"  # held while inside
    finally:
        os.umask(umask)
    assert lock.stat().st_mode & 0o777 == 0o664
    holder = lock_holder(lock)
    try:
        assert holder.stdout.readline() == "locked\n"  # released at the end of the block
    finally:
        holder.communicate("\n", timeout=30)


def test_a_lock_beside_a_store_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "beir").write_text("a file where a folder should be")
    store = SimpleNamespace(path=str(tmp_path / "beir" / "scifact" / "docs.pklz4"))
    with pytest.raises(UserError, match=r"while writing .*docs.pklz4.rerank-eval.lock; nothing was built$"):
        with docstore.docstore_lock(store, "waiting"):
            pass


@pytest.mark.parametrize("kind", ["exclusive", "shared"])
def test_a_build_lock_another_process_holds_is_waited_for_and_said(tmp_path, capsys, kind):
    store = SimpleNamespace(path=str(tmp_path / "docs.pklz4"))
    holder = lock_holder(Path(f"{store.path}.rerank-eval.lock"), kind)
    released = threading.Event()
    entered_after_release: list[bool] = []

    def take() -> None:
        with docstore.docstore_lock(store, "another process is building; waiting for it"):
            entered_after_release.append(released.is_set())

    try:
        assert holder.stdout.readline() == "locked\n"
        taker = threading.Thread(target=take)
        taker.start()
        said, deadline = "", time.monotonic() + 30
        while "another process is building; waiting for it\n" not in said:
            assert time.monotonic() < deadline, "the wait was not said"
            said += capsys.readouterr().err
            time.sleep(0.01)
        released.set()
    finally:
        holder.communicate("\n", timeout=30)
    taker.join(30)
    assert entered_after_release == [True]


# -- the first and second Ctrl-C (or SIGTERM) ------------------------------------------------------


def handlers() -> dict[int, object]:
    return {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}


class NotHandled(Exception):
    pass


@pytest.fixture(autouse=True)
def signals_not_handled_fail_the_test():
    """A signal a handler under test lets through fails the test (it would end or stop pytest)."""

    def unhandled(signum, frame):
        raise NotHandled(signal.Signals(signum).name)

    before = handlers()
    for signum in before:
        signal.signal(signum, unhandled)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_the_first_ctrl_c_asks_to_stop_and_the_second_stops_at_once(capsys):
    before = handlers()
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        assert capsys.readouterr().err.startswith("Ctrl-C: stopping before the next forward pass;")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert handlers() == before


def test_sigterm_asks_to_stop_and_is_named(capsys):
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
    assert capsys.readouterr().err.startswith("SIGTERM: stopping before the next forward pass;")
    assert Interrupted("stopped", stop.signum).exit_code == 143


def test_while_loading_the_first_signal_stops_at_once_with_its_own_exit_code():
    with StopRequest() as stop:
        with pytest.raises(KeyboardInterrupt), stop.preparing():
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and not stop.requested
        assert Interrupted("stopped", stop.signum).exit_code == 143
        try:
            os.kill(os.getpid(), signal.SIGINT)  # loading over: the next one only asks to stop
        except KeyboardInterrupt:
            pytest.fail("a Ctrl-C after loading stopped at once")
        assert stop.requested


def test_ending_at_once_gives_the_handlers_back():
    before = handlers()
    with ending_at_once("stopped"):
        assert handlers() != before
    assert handlers() == before
