"""`bench`, `bench-encode` and `bench-index`: the project's own speed and memory measurements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rerank_eval.cli.app import app, console, user_errors
from rerank_eval.cli.options import DeviceOpt, DtypeOpt, integer_at_least, positive_integer, whole_number
from rerank_eval.errors import UserError


def note_a_gpu_shape_on_a_cpu(shape: str, device: str | None) -> None:
    """A shape sized for a GPU run on a CPU takes minutes before it prints anything: say so first."""
    from rerank_eval.models.common import pick_device

    if shape != "tiny" and pick_device(device).type == "cpu":
        typer.echo(
            f"note: the {shape} shape is sized for a GPU; on a CPU this takes minutes (--shape tiny)",
            err=True,
        )


def write_json(result: dict, json_out: Path | None) -> None:
    """The measurement, every field of it, written atomically to `--json` when given (the table
    printed before it is for reading; this is for keeping and comparing)."""
    from rerank_eval.results.outputs import write_output

    if json_out:
        text = json.dumps(result, indent=2)
        write_output(json_out, lambda path: path.write_text(text + "\n", encoding="utf-8"))
        console.print(f"wrote {json_out}")


@app.command("bench")
@user_errors
def bench(
    preset: Annotated[
        str, typer.Option("--preset", help="short (≈20-token documents), medium (≈150), long (≈1,000).")
    ] = "medium",
    shape: Annotated[
        str, typer.Option("--shape", help="qwen3-0.6b (jina-reranker-v3's shape, random weights) or tiny.")
    ] = "tiny",
    queries: Annotated[
        int | None,
        typer.Option("--queries", parser=positive_integer, help="Queries (default 32 on CUDA, 4 on CPU)."),
    ] = None,
    candidates: Annotated[
        int, typer.Option("--candidates", parser=positive_integer, help="Candidates per query.")
    ] = 100,
    doc_tokens: Annotated[
        int | None,
        typer.Option(
            "--doc-tokens",
            parser=positive_integer,
            help="Median document length in tokens (log-normal; overrides the preset).",
        ),
    ] = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    matmul_size: Annotated[
        int | None,
        typer.Option(
            "--matmul-size",
            parser=positive_integer,
            help=(
                "Size of the matrix product measuring the peak, in the run's dtype "
                "(default 8192 on CUDA, 1024 on CPU)."
            ),
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every field of the result as JSON here.")
    ] = None,
    fused_rms_norm: Annotated[
        bool,
        typer.Option(
            "--fused-rms-norm/--no-fused-rms-norm",
            help="Ours with one fused kernel per RMSNorm (the reference-style path never fuses).",
        ),
    ] = True,
    trim_last_layer: Annotated[
        bool,
        typer.Option(
            "--trim-last-layer/--no-trim-last-layer",
            help="Ours with the last layer run only at the positions read (the reference-style path "
            "runs it everywhere).",
        ),
    ] = True,
    compile_elementwise: Annotated[
        bool | None,
        typer.Option(
            "--compile-elementwise/--no-compile-elementwise",
            help="Ours with the rotary embedding and SiLU compiled into single kernels (torch.compile; "
            "the warm-up compiles). Default: on CUDA, off on CPUs.",
            show_default=False,
        ),
    ] = None,
    pad_multiple: Annotated[
        int | None,
        typer.Option(
            "--pad-multiple",
            parser=positive_integer,
            help="Ours with forward-pass lengths rounded up to this multiple. Default: 64 on CUDA "
            "(fewer shapes for cuDNN attention to plan), 1 on CPUs.",
            show_default=False,
        ),
    ] = None,
    pack_blocks: Annotated[
        bool | None,
        typer.Option(
            "--pack-blocks/--no-pack-blocks",
            help="Ours with each batch's blocks packed into one row instead of padded rows. Default: "
            "with FlashAttention (its varlen kernel takes the boundaries); with SDPA transformers builds "
            "a block-diagonal mask, which is exact but slow.",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            parser=whole_number,
            help="Workload seed. Runs in one process that repeat a seed repeat its prompt shapes, "
            "which GPU kernels may have planned already.",
        ),
    ] = 0,
    second_pass: Annotated[
        bool,
        typer.Option(
            "--second-pass",
            help="Time both paths again over the same workload, once every prompt shape has run.",
        ),
    ] = False,
) -> None:
    """Benchmark the listwise model: the published procedure's style against ours, same workload, same run."""
    from rerank_eval.bench.listwise import PRESETS, SHAPES, run_bench
    from rerank_eval.bench.table import bench_table

    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; use {', '.join(PRESETS)}")
    if shape not in SHAPES:
        raise UserError(f"unknown shape {shape!r}; use {', '.join(SHAPES)}")
    note_a_gpu_shape_on_a_cpu(shape, device)
    result = run_bench(
        preset,
        shape,
        queries,
        candidates,
        doc_tokens,
        device,
        dtype,
        matmul_size,
        fused_rms_norm=fused_rms_norm,
        trim_last_layer=trim_last_layer,
        compile_elementwise=compile_elementwise,
        pad_multiple=pad_multiple,
        pack_blocks=pack_blocks,
        seed=seed,
        second_pass=second_pass,
    )
    console.print(bench_table(result))
    write_json(result, json_out)


@app.command("bench-encode")
@user_errors
def bench_encode(
    shape: Annotated[
        str,
        typer.Option(
            "--shape",
            help="xlm-roberta-large (jina-embeddings-v3's shape, random weights, no adapters) or tiny.",
        ),
    ] = "tiny",
    passages: Annotated[
        int | None,
        typer.Option(
            "--passages", parser=positive_integer, help="Passages (default 20,000 on CUDA, 2,000 on CPU)."
        ),
    ] = None,
    device: DeviceOpt = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="Ours' dtype: float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU); "
            "the straightforward path runs float32.",
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-batch-tokens",
            parser=positive_integer,
            help="Ours' padded tokens per batch (default 65,536 on CUDA, 8,192 on CPU).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", parser=whole_number, help="Workload seed.")] = 0,
    second_pass: Annotated[
        bool,
        typer.Option(
            "--second-pass",
            help="Time ours over the passages again, once every batch shape has run (as in a large corpus).",
        ),
    ] = False,
    packed_sequences: Annotated[
        bool,
        typer.Option(
            "--packed-sequences",
            help="Also time ours with texts packed end to end, no padding (fused kernels on; "
            "torch's varlen attention on CUDA).",
        ),
    ] = False,
    corpus_shard_size: Annotated[
        int | None,
        typer.Option(
            "--corpus-shard-size",
            parser=positive_integer,
            help="Also time the corpus path (encode_corpus: shards of this many passages read, encoded "
            "and written to a temporary cache, as fetch and runs do; runs use 65,536).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write every field of the result as JSON here.")
    ] = None,
) -> None:
    """Benchmark the dense encoder: the straightforward way against ours, same workload, same run.

    The straightforward way (the usual one-off script): float32, batches of 32 in input order.

    Ours encodes each distinct text once, in length-sorted batches under a token budget."""
    from rerank_eval.bench.encoder import SHAPES, run_bench_encode
    from rerank_eval.bench.table import encode_table

    if shape not in SHAPES:
        raise UserError(f"unknown shape {shape!r}; use {', '.join(SHAPES)}")
    note_a_gpu_shape_on_a_cpu(shape, device)
    result = run_bench_encode(
        shape, passages, device, dtype, max_batch_tokens, seed,
        second_pass=second_pass, packed_sequences=packed_sequences, corpus_shard_size=corpus_shard_size,
    )  # fmt: skip
    console.print(encode_table(result))
    write_json(result, json_out)


@app.command("bench-index")
@user_errors
def bench_index(
    documents: Annotated[
        int, typer.Option("--docs", parser=integer_at_least(1000), help="Passages in the synthetic corpus.")
    ] = 200_000,
    engine: Annotated[
        str, typer.Option("--engine", help="bm25s (built-in) or lucene (Pyserini, the lucene extra).")
    ] = "bm25s",
) -> None:
    """Measure a doc-store build and a BM25 index build and search, projected to MIRACL.

    On a synthetic MIRACL-like corpus: ir_datasets' doc store, then the engine's index and 1,000
    searches (documents/s, queries/s, peak memory, size), projected to MIRACL English (32.9M
    passages) and all 18 languages (106M)."""
    from rerank_eval.bench.index import ENGINES, measure
    from rerank_eval.first_stage import lucene_runtime

    if engine not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "lucene" and not lucene_runtime.available():
        raise lucene_runtime.missing_extra(instead="--engine bm25s")
    result = measure(documents, engine)
    console.print_json(json.dumps(result))
