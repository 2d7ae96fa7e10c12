"""The dense first stage's GPU checks (6 and 7 of `gpu_check.py`, which imports them from here):
bench-encode padded and packed, the encoder's chunk queued without waiting, where the encoder's
time goes on the device (a profile, padded and packed), exact search at HotpotQA's size and its
equality with a float64 brute force."""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerank_eval.bench.device import synchronize
from rerank_eval.bench.encoder import EncodeWorkload, random_encoder_checkpoint, run_bench_encode
from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.search import exact_search, key_ranks, key_scores

ENCODE_PASSAGES = 8_000  # the float32 straightforward path takes ≈ 6 ms a passage on an H200
# Exact search: HotpotQA's corpus (5.2M) and test queries (7,405); --quick shrinks it for a CPU
SEARCH = {"documents": 5_000_000, "dimension": 1024, "queries": 7_405, "shard_size": 65_536,
          "query_batch": 1024, "k": 100, "exact_documents": 200_000}  # fmt: skip
QUICK_SEARCH = {"documents": 40_000, "dimension": 64, "queries": 300, "shard_size": 4096,
                "query_batch": 128, "k": 100, "exact_documents": 20_000}  # fmt: skip
SEARCH_SECONDS = 60.0


#: bf16 against float32 vectors (unit length): 1.3e-3 measured on an H200; a copy read too early or
#: attention leaking across packed texts is far beyond it
ENCODE_DIFFERENCE_BOUND = 1e-2


def _percent(row: dict, key: str) -> str:
    return f"{row[key]:.1%}" if isinstance(row.get(key), float) else "-"


def _rate(path: dict) -> str:
    return f"{path['passages_per_second']:,.0f} passages/s, MFU {_percent(path, 'mfu_datasheet')}"


def _passes(path: dict) -> str:
    return f"{_rate(path)}; second pass {_rate(path['second_pass'])}"


def encode_check(device: str, quick: bool) -> list[dict]:
    """bench-encode: ours (padded batches) and ours packed, each with a second pass, against the
    straightforward path; passes when ours or ours packed reaches the targets with vectors within
    the bound (packing failing here costs its column, not the row)."""
    shape = "xlm-roberta-large" if device == "cuda" else "tiny"
    started = time.time()
    passages = 300 if quick else ENCODE_PASSAGES
    result = run_bench_encode(shape, passages, device=device, second_pass=True, packed_sequences=True,
                              corpus_shard_size=passages // 4)  # fmt: skip
    ours, straightforward = result["ours"], result["straightforward"]
    packed = result.get("ours_packed")
    paths = [("speedup", ours, "max_abs_difference")]
    paths += [("speedup_packed", packed, "max_abs_difference_packed")] if packed else []
    bound = ENCODE_DIFFERENCE_BOUND if device == "cuda" else 1e-5  # CPU: float32 on every path
    exact = all(result[difference] <= bound for _, _, difference in paths)
    fast = device != "cuda" or any(
        result[speedup] >= 3.0 and (path["mfu_datasheet"] or 0) >= 0.40 for speedup, path, _ in paths
    )
    gib = [(p["peak_gpu_memory_bytes"] or 0) / 2**30 for p in (straightforward, ours, packed or ours)]
    packed_note = f"ours packed: {result.get('packed_error')}"
    if packed:
        packed_note = (
            f"ours packed (texts end to end, varlen attention): {_passes(packed)}, "
            f"{result['speedup_packed']:.2f}x, difference {result['max_abs_difference_packed']:.1e}, "
            f"{packed['padded_positions']:,} positions"
            + (f", corpus path {_rate(packed['corpus_path'])}" if "corpus_path" in packed else "")
        )
    note = (
        f"fused kernels {'on' if result['model']['fused_kernels'] else 'off'}; ours (padded batches): "
        f"{_passes(ours)}; {packed_note}; straightforward {straightforward['passages_per_second']:,.0f} "
        f"passages/s; ours' corpus path (4 shards written) {_rate(ours['corpus_path'])}; "
        f"ours tokenizing {ours['tokenize_seconds']:.2f} s of {ours['seconds']:.2f} s; "
        f"positions run {ours['padded_positions']:,} vs {straightforward['padded_positions']:,}; queries "
        f"{result['query_speedup']:.2f}x; peak GPU memory {gib[1]:.1f} / {gib[2]:.1f} GiB vs {gib[0]:.1f} GiB"
    )
    return [{"check": f"bench-encode ({shape}, {ours['dtype']}, {result['workload']['passages']:,} passages)",
             "speedup": result["speedup"], "speedup_second_pass": result["speedup_second_pass"],
             "speedup_packed": result.get("speedup_packed"), "speedup_target": 3.0,
             "mfu_datasheet": ours["mfu_datasheet"],
             "mfu_datasheet_packed": packed["mfu_datasheet"] if packed else None,
             "mfu_measured": ours["mfu_measured"], "max_embedding_difference": result["max_abs_difference"],
             "max_embedding_difference_packed": result.get("max_abs_difference_packed"), "note": note,
             "seconds": time.time() - started, "passed": exact and fast, "result": result}]  # fmt: skip


#: the corpus path at a run's shard size (`first_stage.dense` writes shards of 65,536): three shards
CORPUS_SCALE = {"passages": 196_608, "shard_size": 65_536}
QUICK_CORPUS_SCALE = {"passages": 3_000, "shard_size": 1_000}


def corpus_scale_check(device: str, quick: bool) -> list[dict]:
    """Ours packed through `encode_corpus` (reading, tokenizing, queuing, writing) over three shards
    of a run's size, the rate the GPU-hour projections rest on (informational: no target). The
    reader tokenizes the whole first shard before the GPU starts (about 8 s at this size on an
    H200), a share that falls as a corpus grows; the bench's shards of 2,000 weigh their
    boundaries far more."""
    from rerank_eval.bench.corpus_path import time_corpus_path
    from rerank_eval.bench.device import datasheet_peak, measured_matmul_peak
    from rerank_eval.bench.encoder import flops_per_sequence, non_embedding_parameters
    from rerank_eval.models.common import pick_dtype

    cuda = device == "cuda"
    shape, sizes = ("tiny", QUICK_CORPUS_SCALE) if quick or not cuda else ("xlm-roberta-large", CORPUS_SCALE)
    passages, _ = EncodeWorkload(sizes["passages"], 1, seed=21).texts()
    torch_device = torch.device(device)
    # the peaks as `bench-encode` measures them: its matmul size, ours' dtype
    matmul = measured_matmul_peak(torch_device, 8192 if cuda else 1024, pick_dtype(None, torch_device))
    peaks = (datasheet_peak(torch_device)[1], matmul)
    shards = f"{len(passages):,} passages in shards of {sizes['shard_size']:,}"
    check = f"bench-encode corpus path, {shards} ({shape})"
    with tempfile.TemporaryDirectory(prefix="rerank-eval-corpus-scale-") as folder:
        checkpoint, recipe = random_encoder_checkpoint(shape, Path(folder))
        encoder = DenseEncoder(checkpoint, recipe, device, fused_kernels=True, packed_sequences=True)
        model = encoder.model("passage")
        flops_of = flops_per_sequence(model.config, non_embedding_parameters(model))
        encoder.embed(passages[:2000], "passage")  # the kernels compiled before the clock starts
        result = time_corpus_path(encoder, passages, sizes["shard_size"], flops_of, peaks)
        encoder.unload()
    note = (f"{result['passages_per_second']:,.0f} passages/s, {result['tokens_per_second']:,.0f} tokens/s, "
            f"MFU {_percent(result, 'mfu_datasheet')} ({result['shards']} shards, "
            f"{result['passages_encoded']:,} distinct passages encoded)")  # fmt: skip
    return [{"check": check, "passed": None, "result": result, "note": note}]


def encoder_no_wait_check(device: str) -> list[dict]:
    """A chunk's batches and the copy of its vectors are queued without any call that waits for the
    GPU (`torch.cuda.set_sync_debug_mode("error")`), padded and packed; then the vectors taken back
    equal `embed`'s (the same batches; a copy read before it ended would be far off)."""
    check = "dense encoder chunk queued without waiting for the GPU"
    if device != "cuda":
        return [{"check": check, "passed": None}]
    texts = [f"t{i} " + " ".join(f"w{(i * 7 + j) % 500}" for j in range(5 + i % 60)) for i in range(300)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rerank-eval-no-wait-") as folder:
        checkpoint, recipe = random_encoder_checkpoint("tiny", Path(folder))
        for packed in (False, True):
            label = "packed" if packed else "padded"
            try:
                encoder = DenseEncoder(
                    checkpoint, recipe, device, fused_kernels=True, packed_sequences=packed
                )
            except UserError as exc:
                rows.append({"check": f"{check} ({label})", "passed": False, "error": str(exc)})
                continue
            expected = encoder.embed(texts, "passage")  # warm: model loaded, kernels compiled
            tokens = encoder.tokenize(texts, "passage")
            torch.cuda.set_sync_debug_mode("error")
            try:
                queued = encoder.queue_tokens(tokens, "passage")
            except RuntimeError as exc:
                frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
                where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
                rows.append(
                    {"check": f"{check} ({label})", "passed": False, "error": f"waits at {where}: {exc}"}
                )
                continue
            finally:
                torch.cuda.set_sync_debug_mode(0)
            difference = float(np.abs(queued.result() - expected).max())
            rows.append({"check": f"{check} ({label})", "max_embedding_difference": difference,
                         "passed": difference <= 1e-3})  # fmt: skip
    return rows


#: kernel classes of the encoder's profile, by the first words found in a kernel's name (cuBLAS and
#: cuDNN name theirs by architecture and tile; Inductor's compiled kernels all start with triton_;
#: on a CPU, aten operators)
KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "matmul", "aten::mm", "addmm", "bmm")),
    ("compiled", ("triton",)),
    ("gelu", ("gelu",)),
    ("layer_norm", ("layer_norm", "layernorm")),
    ("copies", ("copy", "memcpy", "index", "cat", "fill", "scatter", "gather")),
)
PROFILE_PASSAGES = 8_000


def kernel_seconds(profiler: Any, device: str) -> dict[str, float]:
    """Time per kernel name under `profiler`: on CUDA each kernel's time on the GPU (compiled ones
    too), on a CPU each aten operator's own time."""
    from torch.autograd import DeviceType

    kernels: dict[str, float] = {}
    if device == "cuda":
        for event in (e for e in profiler.events() if e.device_type == DeviceType.CUDA):
            kernels[event.name] = kernels.get(event.name, 0.0) + event.time_range.elapsed_us() / 1e6
    else:
        for event in (e for e in profiler.key_averages() if e.key.startswith("aten::")):
            kernels[event.key] = event.self_cpu_time_total / 1e6
    return kernels


def class_seconds(
    kernels: dict[str, float], classes: Sequence[tuple[str, Sequence[str]]]
) -> dict[str, float]:
    """Kernel time summed by class: the first class one of whose words is in a kernel's name, else
    other."""
    seconds = {kind: 0.0 for kind, _ in classes} | {"other": 0.0}
    for name, spent in kernels.items():
        lowered = name.lower()
        seconds[next((kind for kind, words in classes if any(w in lowered for w in words)), "other")] += spent
    return seconds


def encode_profile_check(device: str, quick: bool) -> list[dict]:
    """Where ours' encoding time goes, padded and packed, once every batch shape has run (the
    steady state of a corpus): the wall time of one `embed` of the passages under the profiler,
    how busy the device was, its kernel time by class (matrix products, attention, compiled
    elementwise kernels, GELU, LayerNorm, copies, other) and the largest kernels. On a CPU the
    classes are aten operators' own time, which is what `--quick` smoke-tests."""
    from torch.profiler import ProfilerActivity, profile

    shape = "xlm-roberta-large" if device == "cuda" else "tiny"
    passages, _ = EncodeWorkload(300 if quick else PROFILE_PASSAGES, 1, seed=11).texts()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="rerank-eval-encode-profile-") as folder:
        checkpoint, recipe = random_encoder_checkpoint(shape, Path(folder))
        for packed in (False, True):
            check = f"bench-encode profile, ours {'packed' if packed else 'padded'} ({shape})"
            try:
                # packing runs in the fused kernels (on by default on CUDA only)
                fused = True if packed else None
                encoder = DenseEncoder(
                    checkpoint, recipe, device, fused_kernels=fused, packed_sequences=packed
                )
            except UserError as exc:  # packing that cannot run here
                rows.append({"check": check, "passed": None, "error": str(exc)})
                continue
            encoder.embed(passages, "passage")  # every batch shape once: kernels compiled, planned
            synchronize(encoder.device)
            with profile(activities=activities) as profiler:
                started = time.perf_counter()
                encoder.embed(passages, "passage")
                synchronize(encoder.device)
                wall = time.perf_counter() - started
            kernels = kernel_seconds(profiler, device)
            rows.append(_profile_row(check, wall, kernels, device, encoder.fused_kernels))
            encoder.unload()
    return rows


def _profile_row(check: str, wall: float, kernels: dict[str, float], device: str, fused: bool) -> dict:
    seconds = class_seconds(kernels, KERNEL_CLASSES)
    busy = sum(seconds.values())
    largest = sorted(kernels.items(), key=lambda item: -item[1])[:8]
    shares = ", ".join(f"{kind} {spent:.3f} s" for kind, spent in seconds.items() if spent)
    idle = f"device busy {busy / wall:.0%}" if device == "cuda" else "aten operators' own CPU time"
    return {"check": check, "passed": None, "wall_seconds": wall, "fused_kernels": fused,
            "busy_fraction": busy / wall if device == "cuda" else None, "class_seconds": seconds,
            "largest_kernels": [(name[:160], round(spent, 4)) for name, spent in largest],
            "note": f"{wall:.2f} s wall, {idle}: {shares}"}  # fmt: skip


def random_shards(folder: Path, sizes: dict, device: torch.device, documents: int, integers: bool) -> list:
    """Shard files of float16 vectors (standard normal, or integers in [-3, 3]) as the corpus cache
    writes them, memory-mapped back with a random doc-id order (ranks), as (vectors, ranks) pairs."""
    generator = torch.Generator(device).manual_seed(documents)
    folder.mkdir(parents=True, exist_ok=True)
    ranks = np.random.default_rng(documents).permutation(documents)
    shards = []
    for index, start in enumerate(range(0, documents, sizes["shard_size"])):
        shape = (min(sizes["shard_size"], documents - start), sizes["dimension"])
        if integers:
            vectors = torch.randint(-3, 4, shape, device=device, generator=generator).half()
        else:
            vectors = torch.randn(shape, device=device, generator=generator, dtype=torch.float16)
        path = folder / f"shard-{index:06d}.npy"
        np.save(path, vectors.cpu().numpy())
        shards.append((np.load(path, mmap_mode="r"), ranks[start : start + shape[0]]))
    return shards


def search_check(device: str, quick: bool, root: Path) -> list[dict]:
    sizes = QUICK_SEARCH if quick else SEARCH
    chosen = torch.device(device)
    folder = root / "search"
    started = time.time()
    try:
        shards = random_shards(folder, sizes, chosen, sizes["documents"], integers=False)
        written = time.time() - started
        rng = np.random.default_rng(1)
        queries = rng.standard_normal((sizes["queries"], sizes["dimension"]), dtype=np.float32)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        exact_search(queries, shards, sizes["k"], chosen, sizes["query_batch"])
        seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    # one shard on the device (float16 and float32 copies, ranks), the queries, and one block of
    # query_batch × shard_size scores with the int64 keys made of them (≤ 64 bytes a score)
    shard, width = sizes["shard_size"], sizes["dimension"]
    bound = (shard * width * 6 + shard * 8 + sizes["queries"] * (width * 4 + sizes["k"] * 16)
             + sizes["query_batch"] * shard * 64 + 2**28)  # fmt: skip
    passed = seconds < SEARCH_SECONDS and (peak is None or peak <= bound)
    memory = f"peak GPU memory {peak / 2**30:.2f} GiB (bound {bound / 2**30:.2f} GiB)" if peak else ""
    note = (
        f"{sizes['documents']:,} x {width} float16 in {len(shards)} shards, {sizes['queries']:,} queries, "
        f"top-{sizes['k']}: {seconds:.1f} s (target < {SEARCH_SECONDS:.0f} s; shards written in "
        f"{written:.1f} s, not timed); {memory}"
    )
    row = {"check": f"exact search {sizes['documents']:,} x {width}, {sizes['queries']:,} queries",
           "search_seconds": seconds, "peak_gpu_memory_bytes": peak, "memory_bound_bytes": bound,
           "sizes": sizes, "seconds": time.time() - started, "note": note, "passed": passed}  # fmt: skip
    return [row, *exact_search_equality(chosen, sizes, root)]


def exact_search_equality(device: torch.device, sizes: dict, root: Path) -> list[dict]:
    """Top-k keys of `exact_search` against a float64 brute force ordered by (score, rank) descending."""
    documents, k = sizes["exact_documents"], sizes["k"]
    folder = root / "search-exact"
    try:
        shards = random_shards(folder, sizes, device, documents, integers=True)
        rng = np.random.default_rng(2)
        queries = rng.integers(-3, 4, (sizes["queries"], sizes["dimension"])).astype(np.float32)
        keys = exact_search(queries, shards, k, device, sizes["query_batch"])
        vectors = np.concatenate([np.asarray(v) for v, _ in shards]).astype(np.float64)
        ranks = np.concatenate([r for _, r in shards])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    order = np.argsort(-ranks)  # columns by doc id descending: the stable sort breaks ties as trec_eval
    corpus = torch.from_numpy(vectors[order]).to(device)
    column_ranks = torch.from_numpy(ranks[order]).to(device)
    wrong = tied = 0
    for start in range(0, len(queries), 512):
        block = torch.from_numpy(queries[start : start + 512].astype(np.float64)).to(device)
        scores, columns = torch.sort(block @ corpus.T, dim=1, descending=True, stable=True)
        expected_ranks, expected_scores = column_ranks[columns[:, :k]].cpu(), scores[:, :k].cpu()
        got = keys[start : start + 512]
        equal = (key_ranks(got) == expected_ranks) & (key_scores(got).double() == expected_scores)
        wrong += int((~equal.all(1)).sum())
        tied += int((scores[:, 1 : k + 1] == scores[:, :k]).any(1).sum())
    note = (
        f"{len(queries) - wrong:,} of {len(queries):,} queries equal; {tied:,} with ties in the top-{k + 1}"
    )
    check = f"exact search top-{k} = float64 brute force ({documents:,} docs)"
    return [{"check": check, "queries_differing": wrong, "queries_with_ties": tied, "passed": wrong == 0,
             "note": note}]  # fmt: skip
