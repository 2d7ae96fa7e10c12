"""`rerank-eval bench-index`: how fast and how big a BM25 index build is, on a synthetic corpus.

A MIRACL-shaped corpus (passages of Wikipedia-like length, Zipf-distributed words) is written into
a temporary ir_datasets home; a child process (ir_datasets binds its home at import) builds
ir_datasets' doc store (what every first use of a dataset costs) and then the index of an engine
(`bm25s`, the built-in one, or `lucene`, through Pyserini), searches it with synthetic queries,
and reports documents and queries per second and its peak resident memory; the projections for
real corpora scale linearly with their passage counts.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = "from rerank_eval.bench.index import _build_in_child; _build_in_child()"
MIRACL_ENGLISH_PASSAGES = 32_893_221
#: the 18 MIRACL corpora together (../shared/specs/benchmarks.md)
MIRACL_18_PASSAGES = 106_332_152
ENGINES = ("bm25s", "lucene")
SEARCH_QUERIES = 1000


def write_synthetic_corpus(home: Path, documents: int, seed: int = 0) -> None:
    """MIRACL sw layout (one shard) with `documents` passages of about 100 words."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(200_000)]
    cumulative, total = [], 0.0
    for rank in range(len(vocabulary)):
        total += 1.0 / (rank + 1)
        cumulative.append(total)
    base = home / "miracl" / "v1.0" / "sw"
    (base / "docs").mkdir(parents=True)
    (base / "dev").mkdir(parents=True)
    with gzip.open(base / "docs" / "docs-0.jsonl.gz", "wt", encoding="utf-8") as handle:
        for index in range(documents):
            length = max(10, int(rng.lognormvariate(4.5, 0.45)))  # median ≈ 90 words
            words = rng.choices(vocabulary, cum_weights=cumulative, k=length)
            record = {"docid": f"{index}#0", "title": words[0], "text": " ".join(words)}
            handle.write(json.dumps(record) + "\n")
    (base / "dev" / "topics.tsv").write_text("1\tw1 w2\n", encoding="utf-8")
    (base / "dev" / "qrels.tsv").write_text("1 Q0 0#0 1\n", encoding="utf-8")


def _queries(count: int, seed: int = 1) -> dict[str, str]:
    rng = random.Random(seed)
    return {str(i): " ".join(f"w{rng.randrange(2000)}" for _ in range(3)) for i in range(count)}


def _build_in_child() -> None:
    from rerank_eval.config.schema import DatasetSpec
    from rerank_eval.datasets.ir_dataset import IrDataset

    engine = os.environ["RERANK_EVAL_BENCH_ENGINE"]
    spec = DatasetSpec("sw", "miracl/sw/dev", "sw", engine, False, True)
    dataset = IrDataset(spec)
    start = time.perf_counter()
    dataset.documents(["0#0"])  # ir_datasets builds its doc store on the first lookup
    docstore_seconds = time.perf_counter() - start
    docstore_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    folder = Path(os.environ["RERANK_EVAL_CACHE"]) / "index"
    start = time.perf_counter()
    search = _build_bm25s(dataset, folder) if engine == "bm25s" else _build_lucene(dataset, folder)
    seconds = time.perf_counter() - start
    queries = _queries(SEARCH_QUERIES)
    start = time.perf_counter()
    search(queries)
    search_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "docstore_seconds": docstore_seconds,
                      "docstore_peak_bytes": docstore_peak, "search_seconds": search_seconds}))  # fmt: skip


def _build_bm25s(dataset, folder: Path):
    from rerank_eval.first_stage.bm25_index import Bm25Index, Bm25Settings

    settings = Bm25Settings(language="sw")
    Bm25Index._build(dataset, settings, folder)
    index = Bm25Index.open(dataset, settings)
    return lambda queries: index.search(queries, 100)


def _build_lucene(dataset, folder: Path):
    from rerank_eval.first_stage import lucene, lucene_index
    from rerank_eval.first_stage.base import BM25_SETTINGS

    settings = lucene_index.LuceneSettings(
        BM25_SETTINGS["k1"].default, BM25_SETTINGS["b"].default, "sw", "language"
    )
    lucene_index._build(dataset, settings, folder)
    return lambda queries: lucene.search(folder, settings, queries, 100)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(documents: int, engine: str = "bm25s") -> dict[str, float]:
    if engine not in ENGINES:  # (the command says so in its terms; this is a library caller's slip)
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    with tempfile.TemporaryDirectory(prefix="rerank-eval-bench-index-") as root:
        home = Path(root) / "ir_datasets"
        write_synthetic_corpus(home, documents)
        env = {**os.environ, "IR_DATASETS_HOME": str(home), "RERANK_EVAL_CACHE": str(Path(root) / "cache"),
               "RERANK_EVAL_BENCH_ENGINE": engine}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "child failed"
            )
        child = json.loads(done.stdout.strip().splitlines()[-1])
        index_bytes = folder_bytes(Path(root) / "cache" / "index")
        docstore_bytes = sum(folder_bytes(p) for p in home.rglob("docs.pklz4"))
    per_second = documents / child["seconds"]
    # bm25s holds its whole index in memory while building, so its peak grows with the corpus;
    # Lucene flushes segments to disk, so its peak does not (a JVM heap bounded by its buffers)
    peak_gib = round(child["peak_bytes"] / documents * MIRACL_ENGLISH_PASSAGES / 2**30, 1)
    scaling = {"projected_miracl_en_peak_gib": peak_gib} if engine == "bm25s" else {}
    return {
        "engine": engine,
        "documents": documents,
        "docstore_seconds": round(child["docstore_seconds"], 2),
        "docstore_documents_per_second": round(documents / child["docstore_seconds"]),
        "docstore_bytes": docstore_bytes,
        "docstore_peak_memory_bytes": child["docstore_peak_bytes"],
        "seconds": round(child["seconds"], 2),
        "documents_per_second": round(per_second),
        "peak_memory_bytes": child["peak_bytes"],
        "peak_bytes_per_document": round(child["peak_bytes"] / documents),
        "index_bytes": index_bytes,
        "search_queries": SEARCH_QUERIES,
        "search_queries_per_second": round(SEARCH_QUERIES / child["search_seconds"]),
        "projected_miracl_en_hours": round(MIRACL_ENGLISH_PASSAGES / per_second / 3600, 2),
        "projected_miracl_18_hours": round(MIRACL_18_PASSAGES / per_second / 3600, 2),
        "projected_miracl_18_index_gib": round(index_bytes / documents * MIRACL_18_PASSAGES / 2**30, 1),
        **scaling,
    }
