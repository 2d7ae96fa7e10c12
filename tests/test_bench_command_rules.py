"""Rules of the bench commands a mutation round on their option plumbing, the index bench, the
corpus path and the device lookups found unchecked: each option reaches its bench setting as typed
(and each default is the one the help gives), an unknown name is refused before any work, and the
index bench's figures are the hand-worked ones from a child's made-up timings. Nothing is built,
downloaded or timed for real: the benches, the child process and the clocks are replaced here."""

from __future__ import annotations

import gzip
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.bench import corpus_path, device, encoder, index, listwise
from rerank_eval.cli import app
from tests.test_hostile_input import one_line_error


def handed(monkeypatch, module, function: str) -> dict[str, Any]:
    """Replaces `module.function` by one that keeps every argument it was called with (named as
    the real function names them, defaults filled in) and returns an empty result."""
    seen: dict[str, Any] = {}
    signature = inspect.signature(getattr(module, function))

    def keep(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.update(bound.arguments)
        return {"made": "here"}

    monkeypatch.setattr(module, function, keep)
    return seen


@pytest.fixture
def plain_tables(monkeypatch):
    from rerank_eval.bench import table

    monkeypatch.setattr(table, "bench_table", lambda result: "the bench table")
    monkeypatch.setattr(table, "encode_table", lambda result: "the encode table")


def invoke(*args: Any):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- bench ---------------------------------------------------------------------------------------------


def test_every_bench_option_reaches_the_listwise_bench_as_typed(monkeypatch, plain_tables):
    """`bench` hands each option to run_bench under its own name: a swapped or dropped one would
    time another workload or model setting than the one asked for and report it as asked."""
    seen = handed(monkeypatch, listwise, "run_bench")
    result = invoke(
        "bench", "--preset", "long", "--shape", "tiny", "--queries", 3, "--candidates", 7,
        "--doc-tokens", 55, "--device", "cuda:3", "--dtype", "float16", "--matmul-size", 33,
        "--no-fused-rms-norm", "--no-trim-last-layer", "--compile-elementwise", "--pad-multiple", 8,
        "--pack-blocks", "--seed", 9, "--second-pass",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == {
        "preset": "long", "shape": "tiny", "queries": 3, "candidates": 7, "median_doc_tokens": 55,
        "device": "cuda:3", "dtype": "float16", "matmul_size": 33, "compare_float32": True,
        "fused_rms_norm": False, "trim_last_layer": False, "compile_elementwise": True,
        "pad_multiple": 8, "pack_blocks": True, "seed": 9, "second_pass": True,
    }  # fmt: skip
    assert "the bench table" in result.output


def test_bench_defaults_are_the_ones_its_help_gives(monkeypatch, plain_tables):
    """Without options: the medium preset, the tiny shape, 100 candidates, seed 0, fused RMSNorm and
    the trimmed last layer on, one pass; the device-dependent ones (queries, matmul size,
    compilation, padding, packing) left to the bench (None) and the other two flags set both ways."""
    seen = handed(monkeypatch, listwise, "run_bench")
    assert invoke("bench").exit_code == 0
    assert seen == {
        "preset": "medium", "shape": "tiny", "queries": None, "candidates": 100, "median_doc_tokens": None,
        "device": None, "dtype": None, "matmul_size": None, "compare_float32": True,
        "fused_rms_norm": True, "trim_last_layer": True, "compile_elementwise": None,
        "pad_multiple": None, "pack_blocks": None, "seed": 0, "second_pass": False,
    }  # fmt: skip
    assert invoke("bench", "--fused-rms-norm", "--trim-last-layer", "--no-compile-elementwise",
                  "--no-pack-blocks").exit_code == 0  # fmt: skip
    assert (seen["fused_rms_norm"], seen["trim_last_layer"]) == (True, True)
    assert (seen["compile_elementwise"], seen["pack_blocks"]) == (False, False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "--preset", "huge"], "error: unknown preset 'huge'; use short, medium, long"),
        (["bench", "--shape", "qwen3-8b"], "error: unknown shape 'qwen3-8b'; use qwen3-0.6b, tiny"),
        (["bench-encode", "--shape", "bert"], "error: unknown shape 'bert'; use xlm-roberta-large, tiny"),
        (["bench-index", "--engine", "faiss"], "error: --engine must be one of bm25s, lucene, got 'faiss'"),
    ],
)
def test_an_unknown_name_is_refused_in_one_line_before_any_work(monkeypatch, args, message):
    """An unknown preset, shape or engine is refused with the names there are; the bench never
    starts (and the refusal comes before the GPU-shape note)."""
    started = []
    for module, function in ((listwise, "run_bench"), (encoder, "run_bench_encode"), (index, "measure")):
        monkeypatch.setattr(module, function, lambda *a, **k: started.append(a) or {})
    result = invoke(*args)
    assert one_line_error(result) == message
    assert started == [] and "sized for a GPU" not in result.output


def test_a_gpu_shape_asked_on_a_cpu_is_noted_on_stderr_before_the_bench(monkeypatch, plain_tables):
    """`bench --shape qwen3-0.6b --device cpu` says first, on stderr, that it takes minutes; the
    same shape on the device a GPU resolves to says nothing."""
    from rerank_eval.models import common

    handed(monkeypatch, listwise, "run_bench")
    result = invoke("bench", "--shape", "qwen3-0.6b", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "note: the qwen3-0.6b shape is sized for a GPU" in result.stderr
    assert "sized for a GPU" not in result.stdout
    asked = []
    monkeypatch.setattr(common, "pick_device", lambda given: asked.append(given) or torch.device("cuda"))
    quiet = invoke("bench", "--shape", "qwen3-0.6b", "--device", "cuda:1")
    assert quiet.exit_code == 0 and "sized for a GPU" not in quiet.output
    assert asked == ["cuda:1"]  # the note asks about the device given, not the default one


def test_the_json_file_is_the_whole_result_indented_and_said(monkeypatch, plain_tables, tmp_path):
    """`--json FILE` writes every field of the result, two-space indented with a final newline,
    and says where; without it nothing is written or said."""
    monkeypatch.setattr(listwise, "run_bench", lambda *a, **k: {"speedup": 2.5, "device": {"name": "cpu"}})
    out = tmp_path / "result.json"
    result = invoke("bench", "--json", out)
    assert result.exit_code == 0, result.output
    assert (
        out.read_text(encoding="utf-8") == '{\n  "speedup": 2.5,\n  "device": {\n    "name": "cpu"\n  }\n}\n'
    )
    assert result.output.strip().endswith(f"wrote {out}")
    plain = invoke("bench")
    assert plain.exit_code == 0 and "wrote" not in plain.output and list(tmp_path.iterdir()) == [out]


# -- bench-encode --------------------------------------------------------------------------------------


def test_every_bench_encode_option_reaches_the_encoder_bench_as_typed(monkeypatch, plain_tables):
    """`bench-encode` hands each option to run_bench_encode under its own name (its matmul size is
    the bench's default, no option sets it)."""
    seen = handed(monkeypatch, encoder, "run_bench_encode")
    result = invoke(
        "bench-encode", "--shape", "tiny", "--passages", 50, "--device", "cuda:1", "--dtype", "float16",
        "--max-batch-tokens", 512, "--seed", 4, "--second-pass", "--packed-sequences",
        "--corpus-shard-size", 16,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == {
        "shape": "tiny", "passages": 50, "device": "cuda:1", "dtype": "float16", "max_batch_tokens": 512,
        "seed": 4, "matmul_size": None, "second_pass": True, "packed_sequences": True,
        "corpus_shard_size": 16,
    }  # fmt: skip
    assert "the encode table" in result.output


def test_bench_encode_defaults_are_the_ones_its_help_gives(monkeypatch, plain_tables):
    """Without options: the tiny shape, seed 0, one pass, no packing, no corpus path; passages,
    device, dtype and the batch budget left to the bench."""
    seen = handed(monkeypatch, encoder, "run_bench_encode")
    assert invoke("bench-encode").exit_code == 0
    assert seen == {
        "shape": "tiny", "passages": None, "device": None, "dtype": None, "max_batch_tokens": None,
        "seed": 0, "matmul_size": None, "second_pass": False, "packed_sequences": False,
        "corpus_shard_size": None,
    }  # fmt: skip


def test_bench_encode_notes_a_gpu_shape_on_a_cpu(monkeypatch, plain_tables):
    """The encoder bench gives the same note for its large shape on a CPU."""
    handed(monkeypatch, encoder, "run_bench_encode")
    result = invoke("bench-encode", "--shape", "xlm-roberta-large", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "note: the xlm-roberta-large shape is sized for a GPU" in result.stderr


# -- bench-index: the command --------------------------------------------------------------------------


def test_bench_index_hands_docs_and_engine_to_the_measurement_and_prints_its_json(monkeypatch):
    """`--docs` and `--engine` reach measure() (default 200,000 documents with bm25s; 1,000 is the
    least taken) and what it returns is printed as JSON."""
    from rerank_eval.first_stage import lucene_runtime

    seen = []
    monkeypatch.setattr(index, "measure", lambda documents, engine="bm25s": seen.append((documents, engine))
                        or {"engine": engine, "documents": documents})  # fmt: skip
    monkeypatch.setattr(lucene_runtime, "available", lambda: True)
    default = invoke("bench-index")
    assert default.exit_code == 0, default.output
    assert json.loads(default.output) == {"engine": "bm25s", "documents": 200_000}
    assert invoke("bench-index", "--docs", 1000, "--engine", "lucene").exit_code == 0
    assert seen == [(200_000, "bm25s"), (1000, "lucene")]


def test_bench_index_with_lucene_but_without_the_extra_says_how_to_install_it(monkeypatch):
    """`--engine lucene` without Pyserini is the missing-extra refusal, before the corpus is written;
    bm25s needs no extra."""
    from rerank_eval.first_stage import lucene_runtime

    seen = []
    monkeypatch.setattr(index, "measure", lambda documents, engine="bm25s": seen.append(engine) or {})
    monkeypatch.setattr(lucene_runtime, "available", lambda: False)
    message = one_line_error(invoke("bench-index", "--docs", 1000, "--engine", "lucene"))
    assert message.startswith("error: the Lucene first stage needs Pyserini and a Java runtime")
    assert message.endswith("(or --engine bm25s)")  # bench-index has no --first-stage
    assert seen == []
    assert invoke("bench-index", "--docs", 1000).exit_code == 0 and seen == ["bm25s"]


# -- bench-index: the measurement ----------------------------------------------------------------------


def write_bytes(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * count)


class Child:
    """subprocess.run for the index child: writes an index and a doc store of known sizes where
    the child would, keeps what it was given, and prints the timings it is told to."""

    def __init__(self, timings: dict[str, float], returncode: int = 0, stderr: str = "") -> None:
        self.timings, self.returncode, self.stderr = timings, returncode, stderr
        self.calls: list[dict[str, Any]] = []

    def __call__(self, command, env, capture_output, text, check):
        self.calls.append({"command": command, "env": env})
        cache, home = Path(env["RERANK_EVAL_CACHE"]), Path(env["IR_DATASETS_HOME"])
        write_bytes(cache / "index" / "data.bin", 2_047_000)
        write_bytes(cache / "index" / "part" / "meta.bin", 1_000)  # (a folder is not counted)
        write_bytes(cache / "elsewhere.bin", 999)  # not the index
        write_bytes(home / "miracl" / "v1.0" / "sw" / "docs.pklz4" / "a", 700)
        write_bytes(home / "miracl" / "v1.0" / "sw" / "docs.pklz4" / "b" / "c", 300)
        write_bytes(home / "miracl" / "other.bin", 555)  # not the doc store
        stdout = "a line the child printed first\n" + json.dumps(self.timings) + "\n"
        return subprocess.CompletedProcess(command, self.returncode, stdout, self.stderr)


TIMINGS = {
    "seconds": 3.125, "peak_bytes": 2000 * 2**15, "docstore_seconds": 0.25,
    "docstore_peak_bytes": 12_345, "search_seconds": 0.8,
}  # fmt: skip


@pytest.fixture
def child(monkeypatch) -> Child:
    written = []
    fake = Child(TIMINGS)
    monkeypatch.setattr(index.subprocess, "run", fake)
    monkeypatch.setattr(
        index, "write_synthetic_corpus", lambda home, documents: written.append((home, documents))
    )
    fake.written = written
    return fake


def test_the_index_bench_figures_by_hand(child):
    """2,000 documents indexed in 3.125 s are 640 a second: MIRACL English (32,893,221 passages)
    in 14.28 hours, the 18 languages (106,332,152) in 46.15; 2,048,000 index bytes are 1,024 a
    document, 101.4 GiB for the 18; a peak of 32 KiB a document projects bm25s to 1,003.8 GiB on
    English; 1,000 searches in 0.8 s are 1,250 a second; the doc store 8,000 documents a second."""
    result = index.measure(2000, "bm25s")
    assert result == {
        "engine": "bm25s",
        "documents": 2000,
        "docstore_seconds": 0.25,
        "docstore_documents_per_second": 8000,
        "docstore_bytes": 1000,
        "docstore_peak_memory_bytes": 12_345,
        "seconds": 3.12,
        "documents_per_second": 640,
        "peak_memory_bytes": 2000 * 2**15,
        "peak_bytes_per_document": 32_768,
        "index_bytes": 2_048_000,
        "search_queries": 1000,
        "search_queries_per_second": 1250,
        "projected_miracl_en_hours": 14.28,
        "projected_miracl_18_hours": 46.15,
        "projected_miracl_18_index_gib": 101.4,
        "projected_miracl_en_peak_gib": 1003.8,
    }


def test_the_child_builds_with_the_engine_asked_in_the_corpus_written(child):
    """The child runs this interpreter on the child entry point, with ir_datasets' home the folder
    the synthetic corpus of the asked size went to, the cache beside it and the asked engine; a
    Lucene peak is not projected (Lucene's heap does not grow with the corpus)."""
    result = index.measure(1500, "lucene")
    assert result["engine"] == "lucene" and "projected_miracl_en_peak_gib" not in result
    (call,) = child.calls
    assert call["command"] == [sys.executable, "-c", index.CHILD]
    assert call["env"]["RERANK_EVAL_BENCH_ENGINE"] == "lucene"
    ((home, documents),) = child.written
    assert documents == 1500 and call["env"]["IR_DATASETS_HOME"] == str(home)
    assert Path(call["env"]["RERANK_EVAL_CACHE"]) == home.parent / "cache"
    assert not home.parent.exists()  # the temporary root is gone afterwards
    assert index.CHILD == "from rerank_eval.bench.index import _build_in_child; _build_in_child()"


def test_a_failed_child_is_said_by_its_last_stderr_line(monkeypatch):
    """A child that failed raises with the last line of its stderr (the exception, not the first
    traceback line), or "child failed" when it printed nothing there."""
    monkeypatch.setattr(index, "write_synthetic_corpus", lambda home, documents: None)
    monkeypatch.setattr(index.subprocess, "run", Child(TIMINGS, 1, "Traceback (most recent call last):\n"
                        "  File x\nValueError: no room\n"))  # fmt: skip
    with pytest.raises(RuntimeError, match=r"^ValueError: no room$"):
        index.measure(1000)
    monkeypatch.setattr(index.subprocess, "run", Child(TIMINGS, 1, "  \n"))
    with pytest.raises(RuntimeError, match=r"^child failed$"):
        index.measure(1000)


def test_an_engine_the_bench_does_not_know_is_refused_before_any_corpus_is_written(child):
    """A library caller's unknown engine is refused, not built as Lucene under that name."""
    with pytest.raises(ValueError, match=r"^engine must be one of bm25s, lucene, not 'faiss'$"):
        index.measure(1000, "faiss")
    assert child.calls == [] and child.written == []


class Steps:
    """A perf_counter that moves on by the next of `steps` at each read."""

    def __init__(self, steps: list[float]) -> None:
        self.now, self.steps = 0.0, list(steps)

    def __call__(self) -> float:
        self.now += self.steps.pop(0)
        return self.now


def test_the_child_times_the_doc_store_the_build_and_the_searches(monkeypatch, capsys, tmp_path):
    """In the child: the doc store's first lookup, then the engine's build into the cache's `index`
    folder, then 1,000 searches, each timed apart (making the queries is not timed); peaks in
    bytes (Linux's kibibytes × 1,024)."""
    from rerank_eval.datasets import ir_dataset

    opened, built, searched = [], [], []

    class Dataset:
        def __init__(self, spec) -> None:
            opened.append(spec)

        def documents(self, ids):
            opened.append(ids)

    def build(dataset, folder):
        built.append(folder)
        return lambda queries: searched.append(queries)

    monkeypatch.setenv("RERANK_EVAL_BENCH_ENGINE", "bm25s")
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path))
    monkeypatch.setattr(ir_dataset, "IrDataset", Dataset)
    monkeypatch.setattr(index, "_build_bm25s", build)
    monkeypatch.setattr(index, "_build_lucene", lambda *a: pytest.fail("bm25s was asked"))
    # reads: doc store start, end; build start, end; search start, end
    clock = Steps([1.0, 0.5, 1.0, 2.0, 1.0, 0.25])
    monkeypatch.setattr(index, "time", SimpleNamespace(perf_counter=clock))
    real_queries = index._queries

    def untimed_queries(count):  # making the queries takes 100 s here, outside every timing
        clock.now += 100.0
        return real_queries(count)

    monkeypatch.setattr(index, "_queries", untimed_queries)
    peaks = iter([3, 7])
    monkeypatch.setattr(index, "resource", SimpleNamespace(
        RUSAGE_SELF=0, getrusage=lambda _who: SimpleNamespace(ru_maxrss=next(peaks))))  # fmt: skip
    index._build_in_child()
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"seconds": 2.0, "peak_bytes": 7 * 1024, "docstore_seconds": 0.5,
                       "docstore_peak_bytes": 3 * 1024, "search_seconds": 0.25}  # fmt: skip
    spec, ids = opened
    assert (spec.key, spec.ir_datasets_id, spec.language) == ("sw", "miracl/sw/dev", "sw")
    assert spec.first_stage == "bm25s"
    assert ids == ["0#0"] and built == [tmp_path / "index"]
    (queries,) = searched
    assert len(queries) == 1000


def test_the_lucene_child_builds_with_lucenes_defaults(monkeypatch, capsys, tmp_path):
    """`lucene` builds with Lucene (k1 0.9, b 0.4, Swahili's language analyzer) and searches the
    top 100 of the folder it built; the dataset it opens names Lucene as its first stage."""
    from rerank_eval.datasets import ir_dataset
    from rerank_eval.first_stage import lucene, lucene_index

    calls = []
    monkeypatch.setenv("RERANK_EVAL_BENCH_ENGINE", "lucene")
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path))
    monkeypatch.setattr(
        ir_dataset, "IrDataset", lambda spec: calls.append(spec.first_stage) or SimpleNamespace(documents=len)
    )
    monkeypatch.setattr(index, "_build_bm25s", lambda *a: pytest.fail("lucene was asked"))
    monkeypatch.setattr(
        lucene_index, "_build", lambda dataset, settings, folder: calls.append(("build", settings, folder))
    )
    monkeypatch.setattr(
        lucene, "search", lambda folder, settings, queries, k: calls.append(("search", settings, folder, k))
    )
    index._build_in_child()
    settings = lucene_index.LuceneSettings(0.9, 0.4, "sw", "language")
    folder = tmp_path / "index"
    assert calls == ["lucene", ("build", settings, folder), ("search", settings, folder, 100)]
    assert json.loads(capsys.readouterr().out)["search_seconds"] >= 0


def test_the_bm25s_child_builds_swahili_and_searches_the_top_100(monkeypatch, tmp_path):
    """`bm25s` builds the built-in index with Swahili's analyzer into the folder and searches the
    top 100 of the index it opens."""
    from rerank_eval.first_stage.bm25_index import Bm25Index, Bm25Settings

    calls = []
    opened = SimpleNamespace(search=lambda queries, k: calls.append(("search", queries, k)))
    monkeypatch.setattr(Bm25Index, "_build", staticmethod(lambda d, s, f: calls.append(("build", s, f))))
    monkeypatch.setattr(Bm25Index, "open", classmethod(lambda cls, d, s: calls.append(("open", s)) or opened))
    search = index._build_bm25s("dataset", tmp_path)
    search({"1": "w1"})
    settings = Bm25Settings(language="sw")
    assert calls == [("build", settings, tmp_path), ("open", settings), ("search", {"1": "w1"}, 100)]


def test_the_synthetic_corpus_is_a_miracl_shard_of_zipf_words(tmp_path):
    """The corpus: MIRACL's sw layout, ids `N#0`, at least 10 words a passage around a median of
    90 (e^4.5), words drawn by Zipf's law from w0…w199999 (w0 about 1/H(200,000) ≈ 7.8% of them,
    twice w1's share), the title the text's first word; the same seed, the same corpus."""
    index.write_synthetic_corpus(tmp_path / "a", 400)
    base = tmp_path / "a" / "miracl" / "v1.0" / "sw"
    with gzip.open(base / "docs" / "docs-0.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    assert [r["docid"] for r in records] == [f"{i}#0" for i in range(400)]
    words = [r["text"].split() for r in records]
    assert all(r["title"] == w[0] for r, w in zip(records, words, strict=True))
    lengths = sorted(map(len, words))
    assert lengths[0] >= 10 and 80 <= lengths[200] <= 100
    every = [word for text in words for word in text]
    assert all(word.startswith("w") and 0 <= int(word[1:]) < 200_000 for word in every)
    share = every.count("w0") / len(every)
    assert 0.065 <= share <= 0.09 and 1.6 <= every.count("w0") / every.count("w1") <= 2.5
    assert max(int(word[1:]) for word in every) > 20_000  # the whole vocabulary is drawn from
    assert (base / "dev" / "topics.tsv").read_text(encoding="utf-8") == "1\tw1 w2\n"
    assert (base / "dev" / "qrels.tsv").read_text(encoding="utf-8") == "1 Q0 0#0 1\n"
    index.write_synthetic_corpus(tmp_path / "b", 400)
    again = tmp_path / "b" / "miracl" / "v1.0" / "sw" / "docs" / "docs-0.jsonl.gz"
    assert gzip.open(again, "rb").read() == gzip.open(base / "docs" / "docs-0.jsonl.gz", "rb").read()


def test_the_search_queries_are_three_words_of_the_commonest_two_thousand():
    """The 1,000 queries are numbered from 0, three words each of w0…w1999, seeded."""
    queries = index._queries(1000)
    assert list(queries) == [str(i) for i in range(1000)] and queries == index._queries(1000)
    words = [int(word[1:]) for text in queries.values() for word in text.split()]
    assert len(words) == 3000 and min(words) >= 0 and 1900 <= max(words) < 2000


def test_folder_bytes_counts_the_files_under_a_folder(tmp_path):
    """The size of a folder is that of the files in it at any depth, not of its folders."""
    write_bytes(tmp_path / "a", 10)
    write_bytes(tmp_path / "x" / "y" / "b", 32)
    assert index.folder_bytes(tmp_path) == 42


# -- the corpus path and the device --------------------------------------------------------------------


class CharacterEncoder:
    """An encoder on the CPU whose tokens are a text's characters, keeping the sides it is asked for."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.stats, self.sides = {"tokens": 0}, []

    def tokenize(self, texts, side):
        self.sides.append(side)
        return [[0] * len(text) for text in texts]


def test_the_corpus_path_writes_float16_shards_of_the_size_asked(monkeypatch):
    """The timed corpus path writes into a cache of the asked shard size in float16, as a run's
    corpus cache is, and reads the passages of each shard as one (passage) side."""
    made, encoder_used = [], CharacterEncoder()

    def encode_corpus(cache, documents, count, encoder_, label):
        encoder_.stats["tokens"] += 3
        return SimpleNamespace(shards=1, encoded_passages=2)

    def cache(folder, shard_size, storage):
        made.append((folder.name, shard_size, storage))
        return SimpleNamespace(create=lambda _: None)

    monkeypatch.setattr(corpus_path, "CorpusEmbeddings", cache)
    monkeypatch.setattr(corpus_path, "encode_corpus", encode_corpus)
    monkeypatch.setattr(corpus_path, "time", SimpleNamespace(perf_counter=Steps([1.0, 0.5])))
    result = corpus_path.time_corpus_path(encoder_used, ["ab", "c"], 7, lambda n: 1.0, (None, None))
    assert made == [("corpus", 7, "float16")] and encoder_used.sides == ["passage"]
    assert (result["seconds"], result["passages_per_second"]) == (0.5, 4.0)


def test_a_gpus_peak_memory_is_the_most_allocated_since_the_reset(monkeypatch):
    """On CUDA the peak is torch's most allocated memory (not the reserved pool), after a reset of
    the peak statistics on that device; waiting is a synchronize of that device."""
    calls = []
    fake = SimpleNamespace(
        max_memory_allocated=lambda d: calls.append(("allocated", d)) or 11,
        max_memory_reserved=lambda d: calls.append(("reserved", d)) or 99,
        reset_peak_memory_stats=lambda d: calls.append(("reset", d)),
        synchronize=lambda d: calls.append(("synchronize", d)),
    )
    monkeypatch.setattr(device.torch, "cuda", fake)
    gpu = torch.device("cuda", 1)
    device.reset_peak(gpu)
    device.synchronize(gpu)
    assert device.peak_memory(gpu) == 11
    assert calls == [("reset", gpu), ("synchronize", gpu), ("allocated", gpu)]
    calls.clear()
    device.reset_peak(torch.device("cpu"))
    device.synchronize(torch.device("cpu"))
    assert calls == []


def test_the_measured_peak_multiplies_in_the_dtype_asked(monkeypatch):
    """The matmul peak is measured in the dtype given (bf16 on a GPU), on two size×size operands on
    the device given, four products."""
    seen = []
    monkeypatch.setattr(
        device.torch, "matmul", lambda a, b: seen.append((a.dtype, b.dtype, a.shape, b.device))
    )
    device.measured_matmul_peak(torch.device("cpu"), 4, torch.bfloat16)
    assert seen == [(torch.bfloat16, torch.bfloat16, (4, 4), torch.device("cpu"))] * 4


def test_the_projections_rest_on_the_spec_tables_passage_counts():
    """MIRACL English's passages and the 18 languages' together are those of the MIRACL table in
    ../shared/specs/benchmarks.md (a transposed digit moves a projection too little to be seen in
    its rounding)."""
    from tests.conftest import SHARED

    if not (SHARED / "specs" / "benchmarks.md").is_file():
        pytest.skip("../shared/specs is not present")
    table = (SHARED / "specs" / "benchmarks.md").read_text(encoding="utf-8").split("## MIRACL")[1]
    rows = [line.split("|") for line in table.splitlines() if re.match(r"\| [a-z]{2} \|", line)]
    passages = {row[1].strip(): int(row[2].replace(",", "")) for row in rows}
    assert len(passages) == 18 and index.MIRACL_ENGLISH_PASSAGES == passages["en"]
    assert index.MIRACL_18_PASSAGES == sum(passages.values())


def test_a_corpus_path_that_ran_other_tokens_than_planned_is_refused(monkeypatch):
    """The corpus path's FLOPs are those of the tokens planned from each shard's distinct texts; if
    encode_corpus ran another count (here 4 for the 3 planned), the rate is refused, not reported."""

    def encode_corpus(cache, documents, count, encoder_, label):
        encoder_.stats["tokens"] += 4
        return SimpleNamespace(shards=1, encoded_passages=2)

    monkeypatch.setattr(corpus_path, "CorpusEmbeddings", lambda *a: SimpleNamespace(create=lambda _: None))
    monkeypatch.setattr(corpus_path, "encode_corpus", encode_corpus)
    with pytest.raises(RuntimeError, match=r"^the corpus path ran 4 tokens, not the 3 planned$"):
        corpus_path.time_corpus_path(CharacterEncoder(), ["ab", "c"], 7, lambda n: 1.0, (None, None))


def test_only_a_cuda_device_is_asked_its_name_for_a_datasheet_peak(monkeypatch):
    """A device that is not CUDA (a CPU, an Apple GPU) has no datasheet peak, and CUDA is not asked
    about it (torch.cuda would fail on it)."""
    monkeypatch.setattr(device.torch.cuda, "get_device_name", lambda _d: pytest.fail("CUDA was asked"))
    for other in ("cpu", "mps", "meta"):
        assert device.datasheet_peak(torch.device(other)) == (other, None)  # named as what it is
