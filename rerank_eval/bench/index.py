"""`rerank-eval bench-index`: how fast and how big a built-in BM25 build is, on a synthetic corpus.

A MIRACL-shaped corpus (passages of Wikipedia-like length, Zipf-distributed words) is written into
a temporary ir_datasets home; a child process (ir_datasets binds its home at import) builds
ir_datasets' doc store (what every first use of a dataset costs) and then the index, and reports
documents per second and its peak resident memory for each; the projection for a real corpus
scales both linearly with its passage count.
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


def _build_in_child() -> None:
    from rerank_eval.config.schema import DatasetSpec
    from rerank_eval.datasets.ir_dataset import IrDataset
    from rerank_eval.first_stage.bm25_index import Bm25Index, Bm25Settings

    spec = DatasetSpec("sw", "miracl/sw/dev", "sw", "bm25s", False, True)
    dataset = IrDataset(spec)
    start = time.perf_counter()
    dataset.documents(["0#0"])  # ir_datasets builds its doc store on the first lookup
    docstore_seconds = time.perf_counter() - start
    docstore_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    Bm25Index._build(dataset, Bm25Settings(language="sw"), Path(os.environ["RERANK_EVAL_CACHE"]) / "index")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak, "docstore_seconds": docstore_seconds,
                      "docstore_peak_bytes": docstore_peak}))  # fmt: skip


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(documents: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rerank-eval-bench-index-") as root:
        home = Path(root) / "ir_datasets"
        write_synthetic_corpus(home, documents)
        env = {**os.environ, "IR_DATASETS_HOME": str(home), "RERANK_EVAL_CACHE": str(Path(root) / "cache")}
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
    return {
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
        "projected_miracl_en_hours": round(MIRACL_ENGLISH_PASSAGES / per_second / 3600, 2),
        "projected_miracl_en_peak_gib": round(
            child["peak_bytes"] / documents * MIRACL_ENGLISH_PASSAGES / 2**30, 1
        ),
    }
