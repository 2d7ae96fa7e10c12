"""`rerank-eval bench`: the listwise model's speed, ours against the published procedure's style.

A synthetic workload of BEIR-like shape (queries × candidates, document lengths drawn around a
preset's mean) is scored twice on the current device by a randomly initialised model of a named
shape, in the same process:

- reference-style: what the published code does — per query, tokenize every document alone for
  truncation, build the prompt string, tokenize it whole, one prompt per forward pass with every
  layer's hidden states requested, projector, numpy merge;
- ours: `ListwiseLastToken` (blocks of several queries per forward pass, length-sorted right
  padding to a multiple of 64 tokens on CUDA, or with FlashAttention installed the blocks packed
  in one row with their boundaries given to its varlen kernel; only the last hidden state, and its
  last layer only at the marker positions; fused RMSNorm kernels; on CUDA the rotary embedding and
  SiLU compiled; background tokenization).

It reports documents/s, tokens/s, ms per query (p50, p95), peak memory, model FLOP utilisation
against the device's datasheet bf16 peak and against a matrix product measured in the same run in
the dtype ours runs (bf16 on a GPU, float32 on a CPU), the speed-up, the largest score
difference between the paths, and (bf16) the rank agreement (Kendall tau) of ours with its own
float32 scores. Optionally both paths run the workload a second time, when every prompt shape has
been met once (see `timed_again`).
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.bench.device import (
    datasheet_peak,
    measured_matmul_peak,
    peak_memory,
    reset_peak,
    synchronize,
    utilisation,
)
from rerank_eval.models.checkpoint import Checkpoint
from rerank_eval.models.common import dtype_name, pick_device, pick_dtype
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.listwise.model import listwise_attention
from rerank_eval.rerankers.listwise.procedure import (
    EMBED_TOKEN,
    RERANK_TOKEN,
    build_prompt,
    merge_blocks,
    plan_blocks,
    strip_special_strings,
)
from rerank_eval.rerankers.listwise.reranker import ListwiseLastToken
from rerank_eval.rerankers.settings import ListwiseSettings

# Document-length presets (median tokens per document: lengths are log-normal with σ 0.5, so their
# mean is about 13% more), after BEIR datasets of that shape.
PRESETS = {"short": 20, "medium": 150, "long": 1000}
# Model shapes: qwen3-0.6b is jina-reranker-v3's backbone (no download: random weights).
SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, projector=512),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=4096, projector=32),
}  # fmt: skip
WORDS = 2000  # synthetic words, each one token
FLOAT32_QUERIES = 8  # queries of the float32 run behind the bf16 rank agreement


def word(index: int) -> str:
    """The index-th synthetic word: letters only, so byte-level pre-tokenization keeps it whole."""
    letters = ""
    while True:
        index, digit = divmod(index, 26)
        letters += chr(ord("a") + digit)
        if index == 0:
            return "w" + letters


@dataclass
class Workload:
    preset: str
    queries: int
    candidates: int
    median_doc_tokens: int
    query_tokens: int = 12
    seed: int = 0

    def requests(self) -> list[RerankRequest]:
        rng = random.Random(self.seed)
        out = []
        for q in range(self.queries):
            query = " ".join(word(rng.randrange(WORDS)) for _ in range(self.query_tokens))
            docs = []
            for _ in range(self.candidates):
                length = max(4, int(rng.lognormvariate(np.log(self.median_doc_tokens), 0.5)))
                docs.append(" ".join(word(rng.randrange(WORDS)) for _ in range(length)))
            ids = tuple(map(str, range(len(docs))))
            out.append(RerankRequest(f"q{q}", query, ids, tuple(docs), tuple(range(len(docs)))))
        return out


def synthetic_tokenizer(folder: Path):
    """A byte-level BPE tokenizer in which every synthetic word and every word of the prompt's markup
    is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # sorted: the alphabet comes back in another order on every call, and two tokenizers built
    # here (the bfloat16 and float32 models of one bench) must give the same ids
    vocabulary = {token: i for i, token in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges = []

    def add_whole(characters: str) -> None:  # merge the characters one by one into one token
        current = characters[0]
        for character in characters[1:]:
            merged = current + character
            if merged not in vocabulary:
                vocabulary[merged] = len(vocabulary)
                merges.append((current, character))
            current = merged

    for w in range(WORDS):  # after a space, and at a line's start
        add_whole("Ġ" + word(w))
        add_whole(word(w))
    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # The prompt's own words and markup (system prompt, tags, passage numbers) as whole tokens too,
    # so prompts are about as long as the real tokenizer makes them, not spelt letter by letter.
    markup = build_prompt("", [""] * 200)
    for piece, _ in pre_tokenizer.pre_tokenize_str(markup):
        add_whole(piece)
    # ignore_merges: a pre-token in the vocabulary is one token, whatever other merges would do
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=merges, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=131072)
    fast.add_special_tokens(
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>", EMBED_TOKEN, RERANK_TOKEN]}
    )
    fast.save_pretrained(str(folder))
    return fast


def random_reranker(
    shape: str, device: torch.device, dtype: torch.dtype, folder: Path, **settings: Any
) -> ListwiseLastToken:
    """A listwise reranker of the named shape with random weights; `settings` are the family's."""
    from transformers import Qwen3Config, Qwen3Model

    spec = dict(SHAPES[shape])
    projector = spec.pop("projector")
    tokenizer = synthetic_tokenizer(folder)
    spec["vocab_size"] = max(spec["vocab_size"], len(tokenizer))
    config = Qwen3Config(**spec, max_position_embeddings=131072, rope_theta=1e6, tie_word_embeddings=True)
    config._attn_implementation = listwise_attention(device, dtype)
    torch.manual_seed(0)
    with torch.device(device):  # float32 weights, cast by from_parts as loading casts them
        backbone = Qwen3Model(config)
    hidden = spec["hidden_size"]
    weights = {
        "projector.0.weight": torch.randn(projector, hidden) / hidden**0.5,
        "projector.2.weight": torch.randn(projector, projector) / projector**0.5,
    }
    checkpoint = Checkpoint(folder, f"random {shape}", None, None)
    return ListwiseLastToken.from_parts(
        checkpoint, tokenizer, backbone, weights, str(device), dtype, ListwiseSettings(**settings)
    )


# -- the reference-style path -----------------------------------------------------------------------


def reference_style_scores(model: ListwiseLastToken, request: RerankRequest) -> tuple[np.ndarray, int]:
    """One query the way the published code does it; returns scores and prompt tokens processed."""
    tokenizer, s = model.tokenizer, model.settings

    def cut(text: str, limit: int) -> tuple[str, int]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= limit:
            return tokenizer.decode(ids[:limit]), limit
        return text, len(ids)

    query, query_length = cut(request.query, s.max_query_length)
    query = strip_special_strings(query)
    docs = [cut(d, s.max_doc_length) for d in request.texts]
    docs = [(strip_special_strings(text), length) for text, length in docs]
    doc_vectors, query_vectors, tokens = [], [], 0
    for block in plan_blocks(
        [n for _, n in docs], query_length, s.context_length, s.max_doc_length, s.block_size,
        s.block_query_copies,
    ):  # fmt: skip
        prompt = build_prompt(query, [docs[i][0] for i in block])
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
        tokens += ids.shape[1]
        with torch.inference_mode():
            hidden = model.backbone(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            embed = model.projector(hidden[ids[0] == model.embed_id].float())
            query_vector = model.projector(hidden[ids[0] == model.rerank_id].float())[0]
        doc_vectors.append(embed.cpu().numpy())
        query_vectors.append(query_vector.cpu().numpy())
    return merge_blocks(doc_vectors, query_vectors).astype(np.float32), tokens


@contextlib.contextmanager
def published_modules(model: ListwiseLastToken) -> Iterator[None]:
    """transformers' own modules while the reference-style path runs: the published code loads the
    model as it is."""
    model.use_published_modules(True)
    try:
        yield
    finally:
        model.use_published_modules(False)


# -- measurements --------------------------------------------------------------------------------------


def non_embedding_parameters(model: ListwiseLastToken) -> int:
    total = sum(p.numel() for p in model.backbone.parameters())
    return total - model.backbone.embed_tokens.weight.numel()


def model_flops(model: ListwiseLastToken, sequence_lengths: list[int]) -> float:
    """2 × non-embedding parameters × tokens + causal attention 4 × L × H × d × n(n+1)/2 per sequence."""
    config = model.backbone.config
    per_token = 2 * non_embedding_parameters(model)
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim
    return sum(per_token * n + attention * n * (n + 1) / 2 for n in sequence_lengths)


def prompt_lengths(model: ListwiseLastToken, requests: list[RerankRequest]) -> list[int]:
    return [len(block.input_ids) for block in model._blocks(requests)]


@dataclass
class PathResult:
    seconds: float
    docs_per_second: float
    tokens_per_second: float
    ms_per_query_p50: float
    ms_per_query_p95: float
    peak_memory_bytes: int
    model_flops_per_second: float
    mfu_datasheet: float | None
    mfu_measured: float | None


def _path_result(seconds, per_query_ms, requests, lengths, model, device, peaks) -> PathResult:
    flops = model_flops(model, lengths) / seconds
    return PathResult(
        seconds=round(seconds, 4),
        docs_per_second=round(sum(len(r.texts) for r in requests) / seconds, 1),
        tokens_per_second=round(sum(lengths) / seconds, 1),
        ms_per_query_p50=round(float(np.percentile(per_query_ms, 50)), 2),
        ms_per_query_p95=round(float(np.percentile(per_query_ms, 95)), 2),
        peak_memory_bytes=int(peak_memory(device)),
        model_flops_per_second=flops,
        **utilisation(flops, peaks),
    )


def run_reference(model, requests, device, peaks) -> tuple[PathResult, list[np.ndarray]]:
    reset_peak(device)
    scores, per_query, lengths = [], [], []
    with published_modules(model):
        start = time.perf_counter()
        for request in requests:
            began = time.perf_counter()
            query_scores, _ = reference_style_scores(model, request)
            synchronize(device)
            per_query.append((time.perf_counter() - began) * 1000)
            scores.append(query_scores)
        seconds = time.perf_counter() - start
    lengths = prompt_lengths(model, requests)
    return _path_result(seconds, per_query, requests, lengths, model, device, peaks), scores


def run_ours(model, requests, device, peaks) -> tuple[PathResult, list[np.ndarray]]:
    from rerank_eval.pipeline.score import prepared_ahead, score_with_backoff

    reset_peak(device)
    chunks = [
        requests[i : i + model.queries_per_call] for i in range(0, len(requests), model.queries_per_call)
    ]
    scores, per_query = [], []
    start = time.perf_counter()
    for chunk, prepared in prepared_ahead(model, chunks):
        began = time.perf_counter()
        scores += score_with_backoff(model, chunk, prepared)
        synchronize(device)
        per_query += [(time.perf_counter() - began) * 1000 / len(chunk)] * len(chunk)
    seconds = time.perf_counter() - start
    lengths = prompt_lengths(model, requests)
    return _path_result(seconds, per_query, requests, lengths, model, device, peaks), scores


def timed_again(model, requests, device, peaks) -> dict[str, Any]:
    """Both paths over the same workload a second time: every prompt shape has run once in this
    process (GPU kernels may have planned them), while documents are tokenized again as at first."""
    model.forget_documents()
    reference, _ = run_reference(model, requests, device, peaks)
    model.forget_documents()
    ours, _ = run_ours(model, requests, device, peaks)
    return {
        "reference_style": asdict(reference),
        "ours": asdict(ours),
        "speedup": round(reference.seconds / ours.seconds, 3),
    }


def kendall_tau(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    from scipy import stats

    return float(np.mean([stats.kendalltau(x, y).statistic for x, y in zip(a, b)]))


def run_bench(
    preset: str = "medium",
    shape: str = "tiny",
    queries: int | None = None,
    candidates: int = 100,
    median_doc_tokens: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    matmul_size: int | None = None,
    compare_float32: bool = True,
    fused_rms_norm: bool = True,
    trim_last_layer: bool = True,
    compile_elementwise: bool | None = None,
    pad_multiple: int | None = None,
    pack_blocks: bool | None = None,
    seed: int = 0,
    second_pass: bool = False,
) -> dict[str, Any]:
    chosen = pick_device(device)
    chosen_dtype = pick_dtype(dtype, chosen)
    # on a GPU at least two batches of 16 queries, so the background preparation of the second
    # overlaps the first one's forward passes as in a real run
    workload = Workload(preset, queries or (32 if chosen.type == "cuda" else 4), candidates,
                        median_doc_tokens or PRESETS[preset], seed=seed)  # fmt: skip
    requests = workload.requests()
    size = matmul_size or (8192 if chosen.type == "cuda" else 1024)
    device_name, datasheet = datasheet_peak(chosen)
    measured = measured_matmul_peak(chosen, size, chosen_dtype)
    with tempfile.TemporaryDirectory(prefix="rerank-eval-bench-") as folder:
        settings = {
            "fused_rms_norm": fused_rms_norm,
            "trim_last_layer": trim_last_layer,
            "compile_elementwise": compile_elementwise,
            "pad_multiple": pad_multiple,
            "pack_blocks": pack_blocks,
        }
        model = random_reranker(shape, chosen, chosen_dtype, Path(folder), **settings)
        run_ours(model, requests[:1], chosen, (datasheet, measured))  # warm-up: kernels, compiles
        model.forget_documents()  # a cold start: the warm-up's documents are tokenized again
        reference, reference_scores = run_reference(model, requests, chosen, (datasheet, measured))
        ours, our_scores = run_ours(model, requests, chosen, (datasheet, measured))
        result: dict[str, Any] = {
            "workload": asdict(workload),
            "model": {"shape": shape, "non_embedding_parameters": non_embedding_parameters(model),
                      "dtype": dtype_name(chosen_dtype), "attention": model.attention,
                      **{name: getattr(model.settings, name) for name in settings}},
            "device": {"type": chosen.type, "name": device_name, "datasheet_bf16_flops": datasheet,
                       "measured_matmul_flops": measured,
                       "matmul_dtype": dtype_name(chosen_dtype), "matmul_size": size},
            "reference_style": asdict(reference),
            "ours": asdict(ours),
            "speedup": round(reference.seconds / ours.seconds, 3),
            "max_score_difference": float(
                max(np.abs(a - b).max() for a, b in zip(reference_scores, our_scores))
            ),
            "kendall_tau_vs_float32": None,
            "kendall_tau_queries": None,
            "second_pass": None,
        }  # fmt: skip
        if second_pass:
            result["second_pass"] = timed_again(model, requests, chosen, (datasheet, measured))
        if compare_float32 and chosen_dtype != torch.float32:
            # float32 is slow on tensor-core GPUs: the rank agreement is taken over the first queries
            compared = requests[:FLOAT32_QUERIES]
            # float32 on CUDA runs an attention that takes no mask, hence no packed blocks
            fp32_settings = {**settings, "pack_blocks": None}
            float32 = random_reranker(shape, chosen, torch.float32, Path(folder) / "fp32", **fp32_settings)
            _, fp32_scores = run_ours(float32, compared, chosen, (datasheet, measured))
            result["kendall_tau_vs_float32"] = round(kendall_tau(our_scores[: len(compared)], fp32_scores), 4)
            result["kendall_tau_queries"] = len(compared)
    return result
