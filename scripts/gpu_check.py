"""Every GPU check the project needs, in a few minutes, ending with one table.

Run on a CUDA machine from the repository root. With the project installed:

    .venv/bin/python scripts/gpu_check.py --out gpu-check.json

On a machine without network whose python3 already holds torch and transformers (the lent
H100/H200: rerank-eval's own modules are imported from the checkout, and no check needs
ir_datasets, ir_measures or bm25s):

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 scripts/gpu_check.py --out $OUT/gpu-check.json

Each check prints its row as soon as it ends and the JSON is rewritten after every check, so a
failure (reported in its row) or a time limit loses nothing already measured. In order:

1. `rerank-eval bench` on the real jina-reranker-v3 shape (random weights, bf16): medium, short,
   long presets (targets: medium ≥ 45% MFU and ≥ 1.5× the reference-style path; short ≥ 4×;
   long no slower and no out-of-memory at 100 candidates), medium also with the bf16 rank
   agreement (Kendall tau) against float32; each also timed a second time over the same workload
   (`2nd pass`: every prompt shape met once before; the targets apply to the first pass).
2. Every reranker family on a tiny random checkpoint: CUDA float32 scores against CPU float32
   (≤ 1e-4), CUDA bf16 batched against one pair or block at a time (≤ 2e-2), scores float32.
3. The float32 path's largest score difference to the reference-style path (≤ 1e-4), and that
   ours queues a batch's forward pass without the host waiting for the GPU (so the next batch is
   queued while one runs): no synchronising call under `torch.cuda.set_sync_debug_mode("error")`.
4. Informational rows, no target, each on another workload seed so that no prompt shape repeats
   within the process: ours without one of its changes each: medium with transformers' own
   RMSNorm (what the fused kernels add), medium with the last layer run at every position (what
   trimming it adds), medium and short with the rotary embedding and SiLU left eager (what
   compiling them adds), medium and short with forward-pass lengths not rounded up to 64 (what
   fewer cuDNN attention plans add), and where flash-attn is installed (ours then packs blocks for
   its varlen kernel) medium and short with padded blocks instead (what packing adds).
5. A profile of ours on one call of 16 medium queries: how busy the GPU was (its kernels' time
   over the wall time), and its kernel time in attention, matrix products and everything else
   (the elementwise work left to fuse).
6. `rerank-eval bench-encode` on jina-embeddings-v3's shape (xlm-roberta-large, random weights,
   adapters merged: the base model's runtime), ours in bf16 (fused kernels) against the
   straightforward float32 path over 8,000 BEIR-like passages (targets: ≥ 40% MFU against the
   datasheet, ≥ 3× the straightforward path, on the first pass), and ours over the same passages
   once more, every batch shape met before (`2nd pass`, as over a corpus of millions); then the
   same for ours with texts packed end to end (`packed_sequences`: no padding, torch's varlen
   attention). The row passes when either reaches the targets with vectors within 1e-2 of float32
   (packing is the default on CUDA; where it cannot run, the row says why and keeps the rest);
   ours' corpus path too (`encode_corpus`, the passages in 4 shards written to a temporary cache).
   Then a chunk of the encoder, padded and packed, queued without any call that waits for the GPU
   (`torch.cuda.set_sync_debug_mode("error")`), its vectors taken back equal to `embed`'s. Then a
   profile of ours, padded and packed, on 8,000 passages once every batch shape has run (the
   steady state of a corpus): how busy the GPU was and its kernel time by class (matrix products,
   attention, compiled elementwise kernels, GELU, LayerNorm, copies, other), the largest kernels
   named in the JSON: what is left between the measured MFU and the 40% target. Then ours packed
   through the corpus path over 196,608 passages in three shards of a run's size (65,536), the
   rate the GPU-hour projections rest on (informational).
7. Dense exact search at HotpotQA's size: 5,000,000 × 1024 float16 random vectors in shards of
   65,536 written to a temporary folder, 7,405 queries, top-100 (target < 60 s, the files in the
   page cache as after encoding; peak GPU memory within a bound set by the shard size and
   query_batch, not the corpus); and on 200,000 integer-valued vectors (inner products exact in
   float32, ties frequent) the top-100 of every query equal to a float64 brute force in trec_eval's
   order (score descending, doc id descending).

`--only bench-encode,search` runs only the checks whose label contains one of the words (here 6 and 7,
which live in `scripts/dense_checks.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dense_checks import (  # beside this script
    class_seconds,
    corpus_scale_check,
    encode_check,
    encode_profile_check,
    encoder_no_wait_check,
    kernel_seconds,
    search_check,
)

from rerank_eval.bench.device import synchronize
from rerank_eval.bench.listwise import PRESETS, Workload, random_reranker, run_bench
from rerank_eval.models.common import attention_implementation, pick_dtype
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.listwise.model import VARLEN_ATTENTIONS
from tests.checkpoints import (
    build_bi_encoder,
    build_causal_lm,
    build_cross_encoder,
    build_listwise_checkpoint,
)

QUERY = "what causes scurvy"
DOCS = ["scurvy is caused by a lack of vitamin c", "the lazy dog sleeps", "bones need calcium " * 30,
        "heart attacks and aspirin"] * 5  # fmt: skip


HEADER = (
    f"{'check':<58} {'speed-up':>9} {'2nd pass':>9} {'MFU(ds)':>8} {'MFU(mm)':>8} {'max diff':>10} "
    f"{'tau':>7} {'ok':>4}"
)
# queries: at least two batches of 16 where prompts are short, so background preparation overlaps
BENCH_PRESETS = (("medium", 32, 1.5), ("short", 32, 4.0), ("long", 4, 1.0))
# Ours without one of its changes (informational rows): label -> seed, how many of BENCH_PRESETS
# (medium, then short), bench settings
VARIANTS = {
    "transformers' RMSNorm": (1, 1, {"fused_rms_norm": False}),
    "last layer everywhere": (2, 1, {"trim_last_layer": False}),
    "eager elementwise": (3, 2, {"compile_elementwise": False}),
    "lengths not rounded": (4, 2, {"pad_multiple": 1}),
    "blocks padded, not packed": (5, 2, {"pack_blocks": False}),  # only where ours packs them
}


def shape_for(device: str) -> str:
    """jina-reranker-v3's shape on a GPU; the tiny one where a CPU stands in (--quick)."""
    return "qwen3-0.6b" if device == "cuda" else "tiny"


@contextlib.contextmanager
def warmed_reranker(device: str, warm_up: list) -> Iterator:
    """A random listwise reranker in the device's default dtype, after scoring `warm_up` once."""
    chosen = torch.device(device)
    with tempfile.TemporaryDirectory() as folder:
        model = random_reranker(shape_for(device), chosen, pick_dtype(None, chosen), Path(folder))
        model.score_batch(warm_up)  # kernels, allocator, pinned host memory
        yield model


def bench_check(
    device: str, quick: bool, preset: str, queries: int, target: float, variant: str | None = None
) -> list[dict]:
    shape = shape_for(device)
    started = time.time()
    count = 2 if quick else queries
    # The comparison rows take another seed each: prompt shapes this process has run before would
    # find GPU kernel plans (cuDNN attention) ready, and time faster than a first run of a workload.
    seed, _, settings = VARIANTS[variant] if variant else (0, 0, {})
    result = run_bench(
        preset,
        shape,
        count,
        device=device,
        compare_float32=preset == "medium" and not variant,
        seed=seed,
        second_pass=not variant,
        **settings,
    )
    ours = result["ours"]
    mfu_ok = preset != "medium" or (ours["mfu_datasheet"] or 0) >= 0.45
    label = f", {variant}" if variant else ""
    return [{
        "check": f"bench {preset} ({shape}, {result['model']['dtype']}{label})", "speedup": result["speedup"],
        "speedup_second_pass": (result["second_pass"] or {}).get("speedup"),
        "speedup_target": target, "mfu_datasheet": ours["mfu_datasheet"],
        "mfu_measured": ours["mfu_measured"],
        "docs_per_second": ours["docs_per_second"], "peak_gib": ours["peak_memory_bytes"] / 2**30,
        "kendall_tau_vs_float32": result["kendall_tau_vs_float32"], "seconds": time.time() - started,
        "passed": None if variant else result["speedup"] >= target and mfu_ok, "result": result,
    }]  # fmt: skip


def exactness_check(device: str, quick: bool) -> list[dict]:
    count = 2 if quick else 4
    exact = run_bench(
        "medium", shape_for(device), count, device=device, dtype="float32", compare_float32=False
    )
    difference = exact["max_score_difference"]
    return [{"check": "float32 ours vs reference-style", "max_score_difference": difference,
             "passed": difference <= 1e-4, "result": exact}]  # fmt: skip


def no_wait_check(device: str) -> list[dict]:
    check = "listwise forward pass queued without waiting for the GPU"
    if device != "cuda":
        return [{"check": check, "passed": None}]
    requests = Workload("short", 4, 100, PRESETS["short"], seed=4).requests()
    with warmed_reranker(device, requests) as model:
        batch = model._batches(model._blocks(requests))[0]
        torch.cuda.set_sync_debug_mode("error")
        try:
            model._launch(batch)
        except RuntimeError as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            return [{"check": check, "passed": False, "error": f"waits at {where}: {exc}"}]
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return [{"check": check, "passed": True}]


# kernels by kind of work, matched on their names (cuDNN/FlashAttention, cuBLAS/CUTLASS)
ATTENTION_KERNELS = ("sdpa", "flash", "fmha", "attention")
MATMUL_KERNELS = ("gemm", "nvjet", "xmma", "cutlass", "matmul")
ATTENTION_OPS = ("attention",)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def profile_check(device: str, quick: bool) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    requests = Workload("medium", 2 if quick else 16, 100, PRESETS["medium"], seed=3).requests()
    with warmed_reranker(device, requests[:1]) as model:
        prepared = model.prepare(requests)  # tokenization is not part of the profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as profiler:
            started = time.perf_counter()
            model.score_prepared(prepared)
            synchronize(model.device)
            wall = time.perf_counter() - started
    on_gpu = device == "cuda"  # kernels' time on the GPU; else aten operators' own CPU time
    classes = (("attention", ATTENTION_KERNELS if on_gpu else ATTENTION_OPS),
               ("matmul", MATMUL_KERNELS if on_gpu else MATMUL_OPS))  # fmt: skip
    shares = class_seconds(kernel_seconds(profiler, device), classes)
    busy = sum(shares.values())
    check = f"profile medium, ours ({shape_for(device)}, {len(requests)} queries in one call)"
    return [{"check": check, "passed": None, "wall_seconds": wall,
             "busy_fraction": busy / wall if device == "cuda" else None,
             **{f"{kind}_share": spent / busy for kind, spent in shares.items()}}]  # fmt: skip


BUILDERS = {
    "listwise-last-token": lambda folder: build_listwise_checkpoint(folder, model_max_length=600),
    "cross-encoder": build_cross_encoder,
    "yes-no": build_causal_lm,
    "one-zero": build_causal_lm,
    "bi-encoder": build_bi_encoder,
}


def family_check(device: str, family: str, root: Path) -> list[dict]:
    path = str(BUILDERS[family](root / family))
    cpu = load_reranker(path, family=family, device="cpu", dtype="float32").score(QUERY, DOCS)
    gpu32 = load_reranker(path, family=family, device=device, dtype="float32").score(QUERY, DOCS)
    batched = load_reranker(path, family=family, device=device, dtype="bfloat16")
    single = load_reranker(path, family=family, device=device, dtype="bfloat16", max_batch_tokens=1)
    together, alone = batched.score(QUERY, DOCS), single.score(QUERY, DOCS)
    difference = float(np.abs(np.array(cpu) - np.array(gpu32)).max())
    batching = float(np.abs(np.array(together) - np.array(alone)).max())
    return [{"check": f"{family}: {device} fp32 vs cpu; bf16 batched vs alone",
             "max_score_difference": difference, "bf16_batching_difference": batching,
             "passed": difference <= 1e-4 and batching <= 2e-2}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test, e.g. on CPU: 2 queries per bench, 300 passages to encode, a 40,000-vector search",
    )
    parser.add_argument(
        "--only", help="comma-separated words: the checks whose label contains one (e.g. bench-encode,search)"
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    root = Path(tempfile.mkdtemp(prefix="rerank-eval-gpu-check-"))
    packs = attention_implementation(torch.device(device), torch.bfloat16) in VARLEN_ATTENTIONS
    variants = [(label, presets) for label, (_, presets, settings) in VARIANTS.items()
                if packs or "pack_blocks" not in settings]  # fmt: skip
    checks = [
        *((f"bench {b[0]}", functools.partial(bench_check, device, args.quick, *b)) for b in BENCH_PRESETS),
        *((family, functools.partial(family_check, device, family, root)) for family in BUILDERS),
        ("float32 ours vs reference-style", functools.partial(exactness_check, device, args.quick)),
        ("listwise forward pass queued without waiting", functools.partial(no_wait_check, device)),
        ("bench-encode", functools.partial(encode_check, device, args.quick)),
        ("bench-encode: chunk queued without waiting", functools.partial(encoder_no_wait_check, device)),
        ("bench-encode profile", functools.partial(encode_profile_check, device, args.quick)),
        ("bench-encode corpus path", functools.partial(corpus_scale_check, device, args.quick)),
        ("exact search", functools.partial(search_check, device, args.quick, root)),
        # what each of ours' changes adds (informational: no target)
        *((f"bench {b[0]}, {variant}", functools.partial(bench_check, device, args.quick, *b, variant))
          for variant, presets in variants for b in BENCH_PRESETS[:presets]),
        ("profile medium", functools.partial(profile_check, device, args.quick)),
    ]  # fmt: skip
    if args.only:
        words = args.only.split(",")
        checks = [(label, check) for label, check in checks if any(w in label for w in words)]
    print(f"GPU checks on {name} ({time.strftime('%Y-%m-%d')}); details in {args.out}")
    print(HEADER)
    rows: list[dict] = []
    for label, check in checks:
        try:
            new = check()
        except Exception as exc:  # one failed check must not cost the others
            new = [{"check": label, "passed": False, "error": f"{type(exc).__name__}: {exc}"}]
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        for row in new:
            print_row(row)
        rows += new
        args.out.write_text(json.dumps({"device": name, "checks": rows}, indent=2, default=str) + "\n")


def print_row(row: dict) -> None:
    difference = "max_score_difference" if "max_score_difference" in row else "max_embedding_difference"
    cells = [
        _cell(row, "speedup", "9.2f"),
        _cell(row, "speedup_second_pass", "9.2f"),
        _cell(row, "mfu_datasheet", "8.1%"),
        _cell(row, "mfu_measured", "8.1%"),
        _cell(row, difference, "10.1e"),
        _cell(row, "kendall_tau_vs_float32", "7.4f"),
    ]
    verdict = {True: "yes", False: "NO", None: "-"}[row["passed"]]
    print(f"{row['check']:<58} {' '.join(cells)} {verdict:>4}", flush=True)
    if "error" in row:
        print(f"    {row['error']}", flush=True)
    if "note" in row:
        print(f"    {row['note']}", flush=True)
    if "attention_share" in row:
        busy = f"; device busy {row['busy_fraction']:.0%}" if row["busy_fraction"] is not None else ""
        print(
            f"    attention {row['attention_share']:.0%}, matrix products {row['matmul_share']:.0%}, "
            f"other {row['other_share']:.0%} of the profiled time{busy}; {row['wall_seconds']:.2f} s",
            flush=True,
        )


def _cell(row: dict, key: str, form: str) -> str:
    value = row.get(key)
    width = int(form.split(".")[0])
    return format(value, form) if isinstance(value, (int, float)) else "-".rjust(width)


if __name__ == "__main__":
    main()
