"""Exact inner-product top-k over shards streamed from disk, with trec_eval's tie order built in.

Each (score, document) pair becomes one int64 key: the float32 score's bits made order-preserving
in the high 32 bits, the document's rank in doc id byte order in the low 32. Larger key = earlier
in trec_eval's order (score descending, then doc id descending), so `topk` over keys is the exact
top-k with deterministic ties, and top-k lists of different shards or ranks merge by another
`topk` over their keys. Only one shard (and one block of queries' scores) is on the device at a
time, so device memory is bounded by `shard_size` and `query_batch` whatever the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from rerank_eval.runfiles import Run

EMPTY = torch.iinfo(torch.int64).min  # a key below every real one (fewer documents than k)
_LOW = 1 << 32


def score_keys(scores: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """int64 keys ordering (score descending, doc id descending) as plain integers do."""
    bits = (scores.float() + 0.0).contiguous().view(torch.int32).to(torch.int64)  # + 0.0: -0.0 is 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats count down
    return ordered * _LOW + ranks


def key_scores(keys: torch.Tensor) -> torch.Tensor:
    """The float32 scores inside keys (exact)."""
    ordered = torch.div(keys, _LOW, rounding_mode="floor")
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return bits.view(torch.float32)


def key_ranks(keys: torch.Tensor) -> torch.Tensor:
    return keys - torch.div(keys, _LOW, rounding_mode="floor") * _LOW


def merge_top_k(parts: Iterable[torch.Tensor], k: int) -> torch.Tensor:
    """The k largest keys per row of several (queries × m) key blocks."""
    joined = torch.cat(list(parts), dim=1)
    if joined.shape[1] < k:
        pad = torch.full(
            (joined.shape[0], k - joined.shape[1]), EMPTY, dtype=torch.int64, device=joined.device
        )
        joined = torch.cat([joined, pad], dim=1)
    return torch.topk(joined, k, dim=1, sorted=True).values


def shard_top_k(
    queries: torch.Tensor, vectors: np.ndarray, ranks: np.ndarray, k: int, query_batch: int
) -> torch.Tensor:
    """(queries × k) keys of one shard; scores are float32 inner products (no TF32)."""
    device = queries.device
    # copies out of the memory map (read-only pages), one shard at a time
    documents = torch.from_numpy(np.array(vectors)).to(device).float()
    document_ranks = torch.from_numpy(np.array(ranks, dtype=np.int64)).to(device)
    blocks = []
    for start in range(0, queries.shape[0], query_batch):
        scores = queries[start : start + query_batch] @ documents.T
        keys = score_keys(scores, document_ranks.unsqueeze(0))
        blocks.append(merge_top_k([keys], k) if keys.shape[1] < k else torch.topk(keys, k, dim=1).values)
    return torch.cat(blocks).cpu()


def exact_search(
    query_vectors: np.ndarray,
    shards: Iterable[tuple[np.ndarray, np.ndarray]],
    k: int,
    device: torch.device,
    query_batch: int = 1024,
) -> torch.Tensor:
    """Top-k keys of every query over every (vectors, ranks) shard, merged shard by shard."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        queries = torch.from_numpy(np.ascontiguousarray(query_vectors, dtype=np.float32)).to(device)
        best = torch.full((len(query_vectors), k), EMPTY, dtype=torch.int64)
        for vectors, ranks in shards:
            best = merge_top_k([best, shard_top_k(queries, vectors, ranks, k, query_batch)], k)
        return best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def keys_to_run(keys: torch.Tensor, query_ids: list[str], ids_sorted: np.ndarray) -> Run:
    """A run from top-k keys: doc ids from their ranks, float32 scores as Python floats."""
    scores = key_scores(keys).numpy()
    ranks = key_ranks(keys).numpy()
    valid = keys.numpy() != EMPTY
    run: Run = {}
    for row, query_id in enumerate(query_ids):
        run[query_id] = {
            ids_sorted[rank].decode("utf-8"): float(score)
            for rank, score, ok in zip(ranks[row], scores[row], valid[row])
            if ok
        }
    return run
