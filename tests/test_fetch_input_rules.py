"""Rules of reading untrusted input and of fetching, pinned at their edges (a mutation round over
the bounded YAML reader, the line reader, the Hub helpers, stop signals and `fetch`)."""

from __future__ import annotations

import pytest

from rerank_eval import textlines
from rerank_eval.config.bounded_yaml import MAX_BYTES, Refused, load_bounded, read_bounded
from rerank_eval.errors import UserError
from rerank_eval.results.outputs import check_output_paths
from rerank_eval.textlines import JsonLineError, json_line, numbered_lines

# --- the bounded YAML reader ---------------------------------------------------------------------


def test_a_config_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    """512 KiB (524,288 bytes) is the most a benchmarks file may hold: a file of that size is read
    whole; one byte more is refused, naming its size."""
    assert MAX_BYTES == 524_288
    path = tmp_path / "edge.yaml"
    content = b"a: 1\n#" + b"x" * (524_288 - 7) + b"\n"
    path.write_bytes(content)
    assert len(content) == 524_288
    assert read_bounded(path) == content
    assert load_bounded(read_bounded(path)) == {"a": 1}
    path.write_bytes(content + b"\n")
    with pytest.raises(Refused) as refused:
        read_bounded(path)
    assert (refused.value.line, refused.value.problem) == (
        1,
        "the file is 524,289 bytes; a benchmarks file is at most 524,288",
    )


def test_nesting_of_exactly_32_levels_is_read_and_33_are_refused():
    """Every node counts as a level, a scalar too: 32 nested lists, or 31 around a number, are
    read; one level more is refused, naming the line."""
    value = load_bounded(b"[" * 32 + b"]" * 32)
    for _ in range(31):
        (value,) = value
    assert value == []
    value = load_bounded(b"[" * 31 + b"1" + b"]" * 31)
    for _ in range(31):
        (value,) = value
    assert value == 1
    for text in (
        b"[" * 33 + b"]" * 33,
        b"[" * 32 + b"1" + b"]" * 32,
        b"a:\n" + b"  " + b"[" * 32 + b"]" * 32,
    ):
        with pytest.raises(Refused) as refused:
            load_bounded(text)
        assert refused.value.problem == "nested more than 32 levels deep"
    with pytest.raises(Refused) as refused:
        load_bounded(b"a: 1\nb: " + b"[" * 32 + b"]" * 32 + b"\n")
    assert refused.value.line == 2


# --- the line reader -------------------------------------------------------------------------------


@pytest.fixture
def short_lines(monkeypatch):
    """A line limit of 64 bytes, so that its edges are cheap to write."""
    monkeypatch.setattr(textlines, "MAX_LINE_BYTES", 64)


def test_a_line_of_exactly_the_limit_is_read_with_or_without_its_line_end(tmp_path, short_lines):
    """64 bytes and a line feed (65 read at once) is a line of 64; so is a last line of 64 bytes
    without one. 65 bytes before the line end are refused, at that line."""
    path = tmp_path / "edge.txt"
    path.write_bytes(b"a\n" + b"x" * 64 + b"\n" + b"y" * 64)
    assert list(numbered_lines(path)) == [(1, "a"), (2, "x" * 64), (3, "y" * 64)]
    for tail in (b"z" * 65, b"z" * 65 + b"\n"):
        path.write_bytes(b"a\n" + tail)
        with pytest.raises(UserError) as refused:
            list(numbered_lines(path))
        assert str(refused.value).startswith(f"{path}, line 2: longer than ")


def test_the_line_limit_is_16_mib(tmp_path):
    """A line of 16 MiB is read; 16 MiB and one byte is refused (in MiB, as the message says)."""
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 2**24 + b"\n")
    ((number, line),) = list(numbered_lines(path))
    assert (number, len(line)) == (1, 2**24)
    path.write_bytes(b"x" * (2**24 + 1) + b"\n")
    with pytest.raises(UserError) as refused:
        list(numbered_lines(path))
    assert str(refused.value) == f"{path}, line 1: longer than 16 MiB"


def test_windows_line_ends_are_no_part_of_a_line(tmp_path):
    """A carriage return before the line feed is a line end (files written on Windows), not a
    character of the last field of the line."""
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"q1\tfox\r\n\r\nq2\tdog\r\n")
    assert list(numbered_lines(path)) == [(1, "q1\tfox"), (3, "q2\tdog")]


def test_a_repeated_key_is_named_as_the_first_one_repeated_and_cut_to_80_characters():
    """The message names the key repeated first (not a later one), quoted, at most 80 characters
    of it: a line may hold a key of megabytes."""
    with pytest.raises(JsonLineError) as first:
        json_line('{"a": 1, "b": 2, "a": 3, "b": 4, "b": 5}')
    assert str(first.value) == "the JSON object names 'a' twice"
    key = "k" * 1000
    with pytest.raises(JsonLineError) as long:
        json_line(f'{{"{key}": 1, "{key}": 2}}')
    assert str(long.value) == f"the JSON object names {'k' * 80!r} twice"


# --- names given to write under ------------------------------------------------------------------

REFUSED_IN_A_NAME = [
    "\x00", "\t", "\n", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f",  # C0, DEL, C1
    "\u061c", "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069",  # direction controls
]  # fmt: skip
READ_IN_A_NAME = [" ", "~", "\xa0", "\xa9", "\u061b", "\u061d", "\u200d", "\u2010", "\u2029", "\u202f",
                  "\u2065", "\u206a", "\u0645"]  # fmt: skip


@pytest.mark.parametrize("character", REFUSED_IN_A_NAME, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_and_direction_character_is_refused_in_an_output_name(character, tmp_path):
    """C0 (NUL included), DEL, C1 and the text-direction controls (ALM U+061C, LRM/RLM, the
    embeddings and overrides U+202A..U+202E, the isolates U+2066..U+2069) are refused, each alone."""
    path = tmp_path / f"out{character}.csv"
    with pytest.raises(UserError) as refused:
        check_output_paths([path])
    assert str(refused.value) == f"cannot write {str(path)!r}: its name holds a control character"


@pytest.mark.parametrize("character", READ_IN_A_NAME, ids=lambda c: f"U+{ord(c):04X}")
def test_the_characters_next_to_those_ranges_are_names(character, tmp_path):
    """The neighbours of each refused range (space, tilde, no-break space, the Arabic semicolon,
    ZWJ, a hyphen, the paragraph separator, the isolates' neighbours, an Arabic letter) pass."""
    check_output_paths([tmp_path / f"out{character}.csv"])


# --- the Hub helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "offline"),
    [("1", True), ("true", True), ("TRUE", True), ("Yes", True), ("on", True), ("ON", True),
     ("0", False), ("false", False), ("no", False), ("", False), ("offline", False)],
)  # fmt: skip
def test_hf_hub_offline_is_read_as_huggingface_hub_reads_it(monkeypatch, value, offline):
    """1, true, yes and on, in any case, mean offline (as they do to huggingface_hub); anything
    else does not."""
    from rerank_eval.hub import hub_offline

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline


class Connection:
    def close(self) -> None:
        pass


def test_the_probe_asks_the_endpoints_host_and_port_and_says_why_it_failed(monkeypatch):
    """Offline, nothing is probed; online, the endpoint's host is asked on its port (443 where the
    URL names none); a refusal is said by its reason, without errno's number."""
    import socket

    from huggingface_hub import constants

    from rerank_eval import hub
    from rerank_eval.errors import MissingDownload

    asked = []

    def reachable(address, timeout):
        asked.append(address)
        return Connection()

    monkeypatch.setattr(socket, "create_connection", reachable)
    assert hub.internet_unreachable() is True and asked == []  # (the tests run with HF_HUB_OFFLINE=1)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    assert hub.internet_unreachable() is False
    monkeypatch.setattr(constants, "ENDPOINT", "http://mirror.example:8080/hub")
    assert hub.internet_unreachable() is False
    assert asked == [("huggingface.co", 443), ("mirror.example", 8080)]

    def refused(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert hub.internet_unreachable() is True
    with pytest.raises(MissingDownload) as missing:
        hub.hub_snapshot("org/m", ["*.json"])
    assert (
        missing.value.problem
        == "model org/m is not cached and mirror.example cannot be reached (Connection refused)"
    )


def test_a_failed_download_names_the_file_and_the_first_line_of_the_error(monkeypatch):
    """Not cached, the Hub reachable, the download fails: one line naming what (with its kind) and
    the first line of the reason; the repository type is passed on to both look-ups."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from rerank_eval import hub

    asked = []

    def download(repo_id, filename, repo_type="model", local_files_only=False):
        asked.append((repo_id, filename, repo_type, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("502 Bad Gateway\n" + "details " * 100)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "_ensure_downloadable", lambda what: None)
    with pytest.raises(UserError) as failed:
        hub.hub_file("org/runs", "bm25/x.trec", repo_type="dataset", kind="run file")
    assert str(failed.value) == "cannot download run file org/runs/bm25/x.trec: 502 Bad Gateway"
    assert asked == [
        ("org/runs", "bm25/x.trec", "dataset", True),
        ("org/runs", "bm25/x.trec", "dataset", False),
    ]


def test_a_run_file_not_cached_offline_is_named_with_its_kind():
    """Offline, the missing file is named with what it is ("run file"), its repository and path."""
    from rerank_eval.errors import MissingDownload
    from rerank_eval.hub import hub_file

    with pytest.raises(MissingDownload) as missing:
        hub_file("org/no-such-runs", "bm25/x.trec", repo_type="dataset", kind="run file")
    assert (
        missing.value.problem
        == "run file org/no-such-runs/bm25/x.trec is not cached and HF_HUB_OFFLINE is set"
    )


def test_a_pinned_revision_is_what_both_snapshot_look_ups_ask_for(monkeypatch):
    """A model pinned to a commit is looked up in the cache at that commit (not at main's), then
    downloaded at it; a failure is one line."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from rerank_eval import hub

    asked = []

    def snapshot(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        asked.append((repo_id, revision, allow_patterns, local_files_only))
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise OSError("500 Server Error\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(hub, "_ensure_downloadable", lambda what: None)
    with pytest.raises(UserError) as failed:
        hub.hub_snapshot("org/m", ["*.json"], revision="v1.0")
    assert str(failed.value) == "cannot download org/m: 500 Server Error"
    assert asked == [("org/m", "v1.0", ["*.json"], True), ("org/m", "v1.0", ["*.json"], False)]


def test_a_pinned_revision_not_cached_is_not_read_from_another_commit(hub_cache):
    """Only main's commit is cached: asking for another commit offline is "not cached", never
    main's snapshot."""
    from rerank_eval.errors import MissingDownload
    from rerank_eval.hub import hub_snapshot
    from tests import builders

    builders.put_in_hub_cache(hub_cache, "org/pinned-model", "model", "config.json", b"{}")
    assert hub_snapshot("org/pinned-model", ["*.json"]).name == "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(MissingDownload):
        hub_snapshot("org/pinned-model", ["*.json"], revision="f" * 40)


def test_revision_names_at_their_edges():
    """255 characters is the longest revision (a file name's limit); `_` is a ref character; a
    name ending in `.` is no git ref."""
    from rerank_eval.hub import revision_problem

    assert revision_problem("a" * 255) is None
    assert revision_problem("my_branch") is None
    for bad in ("a" * 256, "x.", "v1."):
        assert revision_problem(bad) == f"revision {bad!r} is not a commit, branch or tag name"


# --- stop signals --------------------------------------------------------------------------------


def test_a_stop_asked_for_is_raised_where_scoring_can_stop(capsys):
    """Before any signal scoring goes on; after the first Ctrl-C the next check raises
    StopRequested (the chunk in progress is abandoned there, not after the dataset)."""
    import os
    import signal

    from rerank_eval.pipeline.interrupt import StopRequest, StopRequested

    with StopRequest() as stop:
        stop.raise_if_requested()
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(StopRequested):
            stop.raise_if_requested()
    assert capsys.readouterr().err.startswith("Ctrl-C: stopping before the next forward pass")


# --- fetch -----------------------------------------------------------------------------------------

MINE = """defaults: {top_k: 7}
suites:
  mine:
    datasets:
      - {key: own, id: beir/scifact/test}
      - {key: a, id: beir/nfcorpus/test, first_stage: bm25s}
      - {key: b, id: beir/arguana, first_stage: bm25s, drop_self_matches: true}
"""


@pytest.fixture
def recorded_fetch(tmp_path, monkeypatch):
    """`fetch_suite` on a suite of three datasets (one naming no first stage, one dropping self
    matches), every dataset read, first-stage check, model download and first-stage fetch recorded."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.pipeline import fetch

    calls: list[tuple] = []

    class Dataset:
        def __init__(self, spec):
            self.key = spec.key

        def queries(self):
            calls.append(("queries", self.key))
            return {"q1": "fox"}

        def qrels(self):
            calls.append(("qrels", self.key))

        def documents(self, ids):
            calls.append(("documents", self.key, list(ids)))

    class Kind:
        def __init__(self, name):
            self.name = name

        def preflight(self, spec, source):
            calls.append(("preflight", spec.key, source.name))

        def fetch_model(self, source):
            calls.append(("model", source.name, dict(source.settings)))

    def first_stage(request, build):
        calls.append(("first stage", request.spec.key, request.source.name, request.depth, build))

    monkeypatch.setattr(fetch, "open_dataset", Dataset)
    monkeypatch.setattr(fetch, "kind", Kind)
    monkeypatch.setattr(fetch, "fetch_first_stage", first_stage)
    path = tmp_path / "mine.yaml"
    path.write_text(MINE)
    config = load_config(path)
    specs = config.suite("mine").select(None)

    def run(*args, **kwargs):
        calls.clear()
        fetch.fetch_suite(config, specs, [], *args, **kwargs)
        return list(calls)

    return run


def data(key):
    return [("queries", key), ("qrels", key), ("documents", key, [])]


def test_fetch_checks_every_first_stage_downloads_each_model_once_and_asks_the_runs_depth(
    recorded_fetch, capsys
):
    """Each dataset that names a first stage is checked before any is fetched, its model downloaded
    once for all; each dataset's queries, qrels and doc store are fetched, then its first stage to
    the depth a run asks (top_k 7, 8 where self matches are dropped), built. The one naming none
    gets its data only, and is said to take its run file with the run."""
    assert recorded_fetch(None, True, None, True) == [
        ("preflight", "a", "bm25s"),
        ("model", "bm25s", {"k1": 0.9, "b": 0.4}),
        ("preflight", "b", "bm25s"),
        *data("own"),
        *data("a"),
        ("first stage", "a", "bm25s", 7, True),
        *data("b"),
        ("first stage", "b", "bm25s", 8, True),
    ]
    assert "own: it names no first stage, so its run file comes with the run\n" in capsys.readouterr().err


def test_a_first_stage_named_for_the_fetch_is_fetched_for_every_dataset_with_its_settings(recorded_fetch):
    """--first-stage gives the dataset naming none a first stage too; --first-stage-set reaches
    both the model download and each dataset's fetch; --no-encode builds nothing."""
    assert recorded_fetch("bm25s", True, {"k1": 1.2}, encode=False) == [
        ("preflight", "own", "bm25s (k1=1.2)"),
        ("model", "bm25s (k1=1.2)", {"k1": 1.2, "b": 0.4}),
        ("preflight", "a", "bm25s (k1=1.2)"),
        ("preflight", "b", "bm25s (k1=1.2)"),
        *data("own"),
        ("first stage", "own", "bm25s (k1=1.2)", 7, False),
        *data("a"),
        ("first stage", "a", "bm25s (k1=1.2)", 7, False),
        *data("b"),
        ("first stage", "b", "bm25s (k1=1.2)", 8, False),
    ]


def test_fetch_without_first_stage_fetches_data_only(recorded_fetch, capsys):
    """--no-first-stage: no first stage is checked, downloaded or fetched, and none is said to come
    with the run."""
    assert recorded_fetch(None, False, None, True) == [*data("own"), *data("a"), *data("b")]
    assert "names no first stage" not in capsys.readouterr().err
