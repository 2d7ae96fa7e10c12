"""The corpus path timed: what `fetch` and a run do with a corpus, on the bench's passages.

`bench-encode --corpus-shard-size N` runs `encode_corpus` over the workload's passages in shards of
N into a temporary corpus cache (reading, tokenizing, encoding and writing float16 shards overlap
there), right after ours with the same encoder, and reports it as ours is reported. Shards much
smaller than a run's 65,536 make their boundaries weigh more than they do in a run, so the figure
errs low; the GPU-hour projections rest on this rate at a run's shard size (`scripts/gpu_check.py`,
its corpus-path row).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rerank_eval.bench.device import synchronize, utilisation
from rerank_eval.first_stage.dense.corpus import CorpusEmbeddings
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.encoding import encode_corpus


def time_corpus_path(
    encoder: DenseEncoder,
    passages: list[str],
    shard_size: int,
    flops_of: Callable[[int], float],
    peaks: tuple[float | None, float | None],
) -> dict[str, Any]:
    """Passages/s, tokens/s and MFU of `encode_corpus` over `passages` (each shard's distinct texts
    encoded once, as there); the FLOPs of the tokens it ran, as `run_path` counts them."""
    documents = [(f"d{i}", text) for i, text in enumerate(passages)]
    lengths = []
    for start in range(0, len(passages), shard_size):  # what each shard encodes (untimed)
        distinct = list(dict.fromkeys(passages[start : start + shard_size]))
        lengths += [len(ids) for ids in encoder.tokenize(distinct, "passage")]
    with tempfile.TemporaryDirectory(prefix="rerank-eval-bench-corpus-") as folder:
        cache = CorpusEmbeddings(Path(folder) / "corpus", shard_size, "float16")
        cache.create({"bench": 1})
        tokens_before = encoder.stats["tokens"]
        synchronize(encoder.device)
        start = time.perf_counter()
        report = encode_corpus(cache, iter(documents), len(documents), encoder, label="bench corpus")
        seconds = time.perf_counter() - start
    tokens = encoder.stats["tokens"] - tokens_before
    if tokens != sum(lengths):
        raise RuntimeError(f"the corpus path ran {tokens:,} tokens, not the {sum(lengths):,} planned")
    flops = sum(map(flops_of, lengths)) / seconds
    return {
        "shard_size": shard_size,
        "shards": report.shards,
        "passages_encoded": report.encoded_passages,
        "seconds": round(seconds, 4),
        "passages_per_second": round(len(passages) / seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1),
        "model_flops_per_second": flops,
        **utilisation(flops, peaks),
    }
