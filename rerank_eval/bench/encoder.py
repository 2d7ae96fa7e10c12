"""`rerank-eval bench-encode`: the dense encoder's speed, the straightforward way against ours.

A synthetic workload of BEIR-like shape is embedded twice on the current device, in one run, by a
real `DenseEncoder` (through `Checkpoint` and `EncoderRecipe`) over a randomly initialised model of a
named shape saved to a temporary folder together with a tokenizer in which every synthetic word is
one token (so token counts are controlled):

- workload: passage lengths drawn from a seeded log-normal (median ≈120 tokens, σ 0.6: means of
  BEIR corpora lie between ≈60 and ≈200 tokens, with a long tail), capped at the encoder's
  max_length of 512 tokens, ≈5% of the passages repeating an earlier one (corpora repeat texts);
  queries of ≈12 tokens, one per ten passages;
- shapes: `xlm-roberta-large` is jina-embeddings-v3's backbone as transformers'
  `JinaEmbeddingsV3Config` defaults give it (24 layers, hidden 1024, 16 heads, FFN 4096; XLM-RoBERTa
  with rotary positions), random weights and no adapters: jina-embeddings-v3's
  LoRA adapters are merged into the weights once per side, so its runtime is the base model's;
  `tiny` (2 layers, hidden 64) is for CPUs. Both mean-pool and normalise, as jina-embeddings-v3 does;
  the vocabulary is the synthetic tokenizer's (the embedding table is a lookup, so its 250,002 real
  rows would change memory, not speed, and a table far larger than the tokenizer is refused on load);
- straightforward: `embed_straightforward` in float32 with transformers' own modules, fixed batches
  of 32 in input order, every text encoded, duplicates too (sentence-transformers' `encode` sorts
  texts by character length before batching: against it, sorting by length gains less than here);
- ours: `embed` in the device's default dtype (bf16 on CUDA, float32 on CPU), with the fused
  kernels on CUDA (`jina_kernels`, compiled while the model loads, not timed): each distinct text
  once, batches sorted by length under a token budget, every batch queued before any result is
  copied back, the next chunk of texts tokenized while the device runs this one and queued before
  this one's vectors are waited for;
- ours, packed (`--packed-sequences`): ours with the same batches run as texts end to end, no
  padding (`packed_sequences`, fused kernels on: a run's default on CUDA); where it cannot run, the
  result says why. Ours above stays padded (`packed_sequences` off), so that both are timed.

Reported per path: passages/s and queries/s (texts of the workload per second, so their ratio is the
speed-up), tokens/s (real, unpadded tokens the path ran), padded positions run, the seconds it takes
to tokenize the passages (measured apart; inside `embed` it overlaps the device's work), model FLOP
utilisation against the datasheet bf16 peak and a matrix product measured in the same run in ours'
dtype (the FLOPs the path ran on real tokens, see `flops_per_sequence`), peak GPU memory on CUDA;
and the largest absolute difference between the two paths' embeddings (float32 on a CPU: ≈1e-7).
"""

from __future__ import annotations

import functools
import gc
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.bench.corpus_path import time_corpus_path
from rerank_eval.bench.device import (
    datasheet_peak,
    measured_matmul_peak,
    reset_peak,
    synchronize,
    utilisation,
)
from rerank_eval.bench.listwise import WORDS, synthetic_tokenizer, word
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.recipe import EncoderRecipe
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import (
    default_batch_tokens,
    dtype_name,
    pick_device,
    pick_dtype,
    quiet_transformers,
    release_cached_memory,
)

SHAPES = {
    "xlm-roberta-large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16,
                              intermediate_size=4096),
    "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=256),
}  # fmt: skip
MAX_LENGTH = 512  # jina-embeddings-v3 handles 8,192; BEIR runs usually cut passages at 512
STRAIGHTFORWARD_BATCH = 32  # sentence-transformers' default batch size
WARM_UP_TEXTS = 64


@dataclass
class EncodeWorkload:
    passages: int
    queries: int
    seed: int = 0
    median_passage_tokens: int = 120
    passage_sigma: float = 0.6
    duplicate_fraction: float = 0.05
    query_tokens: int = 12
    max_length: int = MAX_LENGTH

    def texts(self) -> tuple[list[str], list[str]]:
        """(passages, queries); a text of k words is k + 2 tokens (<s> and </s>)."""
        rng = random.Random(self.seed)
        words = [word(i) for i in range(WORDS)]
        longest = self.max_length - 2

        def text(median: float, sigma: float) -> str:
            length = min(longest, max(3, round(rng.lognormvariate(math.log(median), sigma))))
            return " ".join(rng.choices(words, k=length))

        passages: list[str] = []
        for _ in range(self.passages):
            if passages and rng.random() < self.duplicate_fraction:
                passages.append(passages[rng.randrange(len(passages))])
            else:
                passages.append(text(self.median_passage_tokens, self.passage_sigma))
        queries = [text(self.query_tokens, 0.3) for _ in range(self.queries)]
        return passages, queries


def random_encoder_checkpoint(shape: str, folder: Path) -> tuple[Checkpoint, EncoderRecipe]:
    """jina-embeddings-v3's architecture (`JinaEmbeddingsV3Model`) in the named shape with random
    weights (seeded), saved in float32 with an XLM-RoBERTa-style tokenizer (<s> text </s>, padding
    <pad>) in which every synthetic word is one token; mean pooling, normalised, no prefixes."""
    from tokenizers import processors
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    tokenizer = synthetic_tokenizer(folder)
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    tokenizer.model_max_length = MAX_LENGTH
    tokenizer.save_pretrained(str(folder))
    config = JinaEmbeddingsV3Config(
        **SHAPES[shape],
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=bos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    with quiet_transformers():
        JinaEmbeddingsV3Model(config).save_pretrained(str(folder))
    recipe = EncoderRecipe(
        pooling="mean", normalize=True, max_length=MAX_LENGTH, query_prefix="", passage_prefix=""
    )
    return Checkpoint(folder, f"random {shape}", None, None), recipe


# -- FLOPs ---------------------------------------------------------------------------------------------


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters of the transformer layers: neither the embeddings (looked up, not multiplied) nor
    the pooler (run once per sequence, on its first token)."""
    return sum(p.numel() for p in model.layers.parameters())


def flops_per_sequence(config: Any, parameters: int) -> Callable[[int], float]:
    """Model FLOPs of one sequence of n real tokens: per token 2 × non-embedding parameters (each a
    multiply-add in a matrix product) plus bidirectional attention's 4·L·d·n (Q·Kᵀ and the weighted
    sum of V, 2·n·d each per layer, with d the hidden size = heads × head dim), that is
    n · (2·P + 4·L·d·n). Padding is not counted: it is waste, not useful work."""
    attention = 4 * config.num_hidden_layers * config.hidden_size
    return lambda n: n * (2 * parameters + attention * n)


# -- measurement --------------------------------------------------------------------------------------


def peak_gpu_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def run_path(
    encoder: DenseEncoder,
    passages: list[str],
    queries: list[str],
    fast: bool,
    peaks: tuple,
    second_pass: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """One path over the workload, passages then queries, after a warm-up on a few of each. Tokens,
    FLOPs and padding are the passages' (the corpus); queries are timed on their own. With
    `second_pass`, the passages are timed once more: every batch shape met once before, as in a
    corpus of millions, where the same shapes recur (GPU kernels such as cuDNN's attention plan
    each new shape once)."""
    embed = (
        encoder.embed
        if fast
        else functools.partial(encoder.embed_straightforward, batch_size=STRAIGHTFORWARD_BATCH)
    )
    device = encoder.device
    embed(passages[:WARM_UP_TEXTS], "passage")  # loads the model; kernels, allocator
    embed(queries[:WARM_UP_TEXTS], "query")
    model = encoder.model("passage")
    flops_of = flops_per_sequence(model.config, non_embedding_parameters(model))
    ran = list(dict.fromkeys(passages)) if fast else passages  # ours encodes each distinct text once
    start = time.perf_counter()
    lengths = [len(ids) for ids in encoder.tokenize(ran, "passage")]
    tokenize_seconds = time.perf_counter() - start  # the host's share of the passages' time
    reset_peak(device)
    vectors, seconds = [], []
    before = dict(encoder.stats)
    timed = [(passages, "passage"), (queries, "query")] + [(passages, "passage")] * second_pass
    for texts, side in timed:
        synchronize(device)
        start = time.perf_counter()
        vectors.append(embed(texts, side))
        synchronize(device)
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1:  # the first pass over the passages: what its forward passes ran
            tokens = encoder.stats["tokens"] - before["tokens"]
            positions = encoder.stats["positions"] - before["positions"]
    if tokens != sum(lengths):
        raise RuntimeError(f"the encoder ran {tokens:,} passage tokens, not the {sum(lengths):,} planned")
    flops = sum(map(flops_of, lengths)) / seconds[0]
    result = {
        "dtype": dtype_name(encoder.dtype),
        "seconds": round(seconds[0], 4),
        "passages_per_second": round(len(passages) / seconds[0], 1),
        "passages_encoded": len(ran),
        "tokens": tokens,
        "padded_positions": positions,
        "tokens_per_second": round(tokens / seconds[0], 1),
        "tokenize_seconds": round(tokenize_seconds, 4),
        "model_flops_per_second": flops,
        **utilisation(flops, peaks),
        "query_seconds": round(seconds[1], 4),
        "queries_per_second": round(len(queries) / seconds[1], 1),
        "peak_gpu_memory_bytes": peak_gpu_memory(device),
    }
    if second_pass:
        again = sum(map(flops_of, lengths)) / seconds[2]
        result["second_pass"] = {
            "seconds": round(seconds[2], 4),
            "passages_per_second": round(len(passages) / seconds[2], 1),
            "tokens_per_second": round(tokens / seconds[2], 1),
            "model_flops_per_second": again,
            **utilisation(again, peaks),
        }
    return result, np.concatenate(vectors[:2])  # passages and queries, once


def run_bench_encode(
    shape: str = "tiny",
    passages: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_batch_tokens: int | None = None,
    seed: int = 0,
    matmul_size: int | None = None,
    second_pass: bool = False,
    packed_sequences: bool = False,
    corpus_shard_size: int | None = None,
) -> dict[str, Any]:
    """The workload through the straightforward path and ours (and with `packed_sequences`, ours
    again with texts packed end to end, fused kernels on), one model on the device at a time."""
    chosen = pick_device(device)
    ours_dtype = pick_dtype(dtype, chosen)
    count = passages or (20_000 if chosen.type == "cuda" else 2_000)
    workload = EncodeWorkload(count, max(1, count // 10), seed=seed)
    passage_texts, query_texts = workload.texts()
    size = matmul_size or (8192 if chosen.type == "cuda" else 1024)
    device_name, datasheet = datasheet_peak(chosen)
    peaks = (datasheet, measured_matmul_peak(chosen, size, ours_dtype))
    budget = int(max_batch_tokens or default_batch_tokens(chosen))
    with tempfile.TemporaryDirectory(prefix="rerank-eval-bench-encode-") as folder:
        checkpoint, recipe = random_encoder_checkpoint(shape, Path(folder))
        encoder = DenseEncoder(checkpoint, recipe, str(chosen), "float32", budget, fused_kernels=False)
        straightforward, reference = run_path(encoder, passage_texts, query_texts, False, peaks)
        model = encoder.model("passage")
        described = _described(shape, model, recipe)
        model_config = model.config
        del model
        encoder = _next_encoder(
            encoder, checkpoint, recipe, str(chosen), ours_dtype, budget, packed_sequences=False
        )
        described["fused_kernels"] = encoder.fused_kernels
        ours, vectors = run_path(encoder, passage_texts, query_texts, True, peaks, second_pass)
        if corpus_shard_size:
            flops_of = flops_per_sequence(model_config, described["non_embedding_parameters"])
            ours["corpus_path"] = time_corpus_path(encoder, passage_texts, corpus_shard_size, flops_of, peaks)
        packed_fields: dict[str, Any] = {}
        if packed_sequences:
            try:  # where packing cannot run, the run keeps the other two paths and says why
                encoder = _next_encoder(encoder, checkpoint, recipe, str(chosen), ours_dtype, budget,
                                        fused_kernels=True, packed_sequences=True)  # fmt: skip
            except UserError as exc:
                packed_fields = {"packed_error": str(exc)}
            else:
                packed, packed_vectors = run_path(
                    encoder, passage_texts, query_texts, True, peaks, second_pass
                )
                if corpus_shard_size:
                    packed["corpus_path"] = time_corpus_path(
                        encoder, passage_texts, corpus_shard_size, flops_of, peaks
                    )
                packed_fields = _packed_fields(packed, straightforward, reference, packed_vectors)
        del encoder
    return {
        "workload": _workload_fields(workload, passage_texts),
        "model": described,
        "device": {
            "type": chosen.type,
            "name": device_name,
            "datasheet_bf16_flops": datasheet,
            "measured_matmul_flops": peaks[1],
            "matmul_dtype": dtype_name(ours_dtype),
            "matmul_size": size,
        },
        "max_batch_tokens": budget,
        "straightforward_batch_size": STRAIGHTFORWARD_BATCH,
        "straightforward": straightforward,
        "ours": ours,
        "speedup": round(straightforward["seconds"] / ours["seconds"], 3),
        # against the straightforward path's only pass: in float32 SDPA cannot use cuDNN's attention
        # (half precision only), the kernel that plans each new shape
        "speedup_second_pass": (
            round(straightforward["seconds"] / ours["second_pass"]["seconds"], 3) if second_pass else None
        ),
        "query_speedup": round(straightforward["query_seconds"] / ours["query_seconds"], 3),
        "max_abs_difference": float(np.abs(reference - vectors).max()),
        **packed_fields,
    }


def _described(shape: str, model: torch.nn.Module, recipe: EncoderRecipe) -> dict[str, Any]:
    """The benched model: its shape's dimensions as built, its size and how it pools."""
    return {
        "shape": shape,
        **{name: getattr(model.config, name) for name in SHAPES[shape]},
        "non_embedding_parameters": non_embedding_parameters(model),
        "architecture": type(model).__name__,
        "adapters": None,
        "pooling": recipe.pooling,
        "normalize": recipe.normalize,
        "max_length": recipe.max_length,
    }


def _workload_fields(workload: EncodeWorkload, passages: list[str]) -> dict[str, Any]:
    """The workload as drawn: its settings, and its passages' lengths in words (+2 special tokens)."""
    lengths = [len(text.split()) + 2 for text in passages]
    return {
        **asdict(workload),
        "distinct_passages": len(set(passages)),
        "passage_tokens_median": float(np.median(lengths)),
        "passage_tokens_mean": round(float(np.mean(lengths)), 1),
        "passage_tokens_at_max_length": sum(n >= MAX_LENGTH for n in lengths),
    }


def _next_encoder(previous: DenseEncoder, *args: Any, **kwargs: Any) -> DenseEncoder:
    """A new encoder once the previous one's model has left the device (each path's peak memory
    is its own)."""
    previous.unload()
    gc.collect()
    release_cached_memory()
    return DenseEncoder(*args, **kwargs)


def _packed_fields(
    packed: dict[str, Any], straightforward: dict[str, Any], reference: np.ndarray, vectors: np.ndarray
) -> dict[str, Any]:
    """Ours with texts packed end to end, beside the straightforward path of the same run."""
    second = packed.get("second_pass")
    return {
        "ours_packed": packed,
        "speedup_packed": round(straightforward["seconds"] / packed["seconds"], 3),
        "speedup_packed_second_pass": (
            round(straightforward["seconds"] / second["seconds"], 3) if second else None
        ),
        "max_abs_difference_packed": float(np.abs(reference - vectors).max()),
    }
