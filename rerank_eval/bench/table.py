"""The terminal tables of `rerank-eval bench` and `rerank-eval bench-encode` results."""

from __future__ import annotations

from typing import Any

from rich.table import Table

#: a utilisation of the matmul peak measured in the same run: above 100% it says that the peak
#: was measured low (the machine busier then than while the model ran), not that the model won
MEASURED_MFU = "measured MFU"
PEAK_MEASURED_LOW = (
    "* above 100%: the matmul peak was measured while the machine was busier than during the timed "
    "run; run the bench on an idle machine"
)

ROWS = [
    ("docs/s", "docs_per_second", "{:,.0f}"),
    ("tokens/s", "tokens_per_second", "{:,.0f}"),
    ("ms/query p50", "ms_per_query_p50", "{:,.1f}"),
    ("ms/query p95", "ms_per_query_p95", "{:,.1f}"),
    ("peak memory (MiB)", "peak_memory_bytes", None),
    ("MFU vs datasheet", "mfu_datasheet", "{:.1%}"),
    ("MFU vs measured matmul", "mfu_measured", MEASURED_MFU),
]


def ours_settings(model: dict[str, Any]) -> str:
    """The settings that make ours differ from the reference-style path, as the JSON records them."""
    return (
        f"attention {model['attention']}, fused RMSNorm {_on(model['fused_rms_norm'])}, last layer trimmed "
        f"{_on(model['trim_last_layer'])}, compiled elementwise {_on(model['compile_elementwise'])}, "
        + (
            "blocks packed in one row"
            if model["pack_blocks"]
            else f"lengths padded to a multiple of {model['pad_multiple']}"
        )
    )


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def bench_table(result: dict[str, Any]) -> Table:
    workload, device, model = result["workload"], result["device"], result["model"]
    table = Table(
        title=(
            f"bench {workload['preset']}: {workload['queries']} queries × {workload['candidates']} "
            f"candidates, median {workload['median_doc_tokens']} tokens/doc; "
            f"{model['shape']} ({model['dtype']}) on {device['name']}"
        ),
        caption=(
            f"ours: {ours_settings(model)}\n"
            f"speed-up {result['speedup']:.2f}×; max score difference {result['max_score_difference']:.2e}"
            + (
                f"; Kendall tau vs float32 {result['kendall_tau_vs_float32']:.4f}"
                if result["kendall_tau_vs_float32"] is not None
                else ""
            )
            + f"; measured {device['matmul_dtype']} matmul "
            + f"{device['measured_matmul_flops'] / 1e12:.2f} TFLOP/s"
            + (
                f"; second pass: speed-up {second['speedup']:.2f}×, ours "
                f"{second['ours']['docs_per_second']:,.0f} docs/s, reference-style "
                f"{second['reference_style']['docs_per_second']:,.0f}"
                if (second := result.get("second_pass"))
                else ""
            )
            + _peak_note(result["reference_style"], result["ours"])
        ),
    )
    table.add_column("")
    table.add_column("reference-style", justify="right")
    table.add_column("ours", justify="right")
    for label, key, form in ROWS:
        table.add_row(label, *(_cell(result[path][key], form) for path in ("reference_style", "ours")))
    return table


def _cell(value: Any, form: str | None) -> str:
    """A value as `form` gives it; bytes (no form) in MiB; a dash for none."""
    if value is None:
        return "–"
    if form == MEASURED_MFU:
        return f"{value:.1%}" + (" *" if value > 1 else "")
    return f"{value / 2**20:,.0f}" if form is None else form.format(value)


def _peak_note(*paths: dict[str, Any]) -> str:
    """The caption's note where a utilisation of the measured peak is above 100%."""
    above = any((path.get("mfu_measured") or 0) > 1 for path in paths)
    return f"\n{PEAK_MEASURED_LOW}" if above else ""


ENCODE_ROWS = [
    ("passages/s", "passages_per_second", "{:,.0f}"),
    ("tokens/s (real)", "tokens_per_second", "{:,.0f}"),
    ("passages encoded", "passages_encoded", "{:,}"),
    ("positions run (padding included)", "padded_positions", "{:,}"),
    ("queries/s", "queries_per_second", "{:,.0f}"),
    ("MFU vs datasheet bf16", "mfu_datasheet", "{:.1%}"),
    ("MFU vs measured matmul (ours' dtype)", "mfu_measured", MEASURED_MFU),
    ("peak GPU memory (MiB)", "peak_gpu_memory_bytes", None),
]


def _rate(path: dict[str, Any]) -> str:
    """A timed pass in a caption: passages/s and MFU against the datasheet."""
    mfu = _cell(path["mfu_datasheet"], "{:.1%}")
    return f"{path['passages_per_second']:,.0f} passages/s, MFU vs datasheet {mfu}"


def encode_table(result: dict[str, Any]) -> Table:
    """The terminal table of a `rerank-eval bench-encode` result."""
    workload, device, model = result["workload"], result["device"], result["model"]
    repeated = 1 - workload["distinct_passages"] / workload["passages"]
    table = Table(
        title=(
            f"bench-encode: {workload['passages']:,} passages (median "
            f"{workload['passage_tokens_median']:.0f} tokens, {repeated:.1%} repeated), "
            f"{workload['queries']:,} queries; {model['shape']} "
            f"({model['non_embedding_parameters'] / 1e6:,.1f}M non-embedding parameters) on {device['name']}"
        ),
        caption=(
            f"speed-up {result['speedup']:.2f}× (queries {result['query_speedup']:.2f}×); max abs embedding "
            f"difference {result['max_abs_difference']:.2e}; measured {device['matmul_dtype']} matmul "
            f"{device['measured_matmul_flops'] / 1e12:.2f} TFLOP/s; fused kernels "
            f"{_on(model['fused_kernels'])}"
            + (
                f"; second pass: ours {_rate(second)}, speed-up {result['speedup_second_pass']:.2f}×"
                if (second := result["ours"].get("second_pass"))
                else ""
            )
            + (
                f"; corpus path (shards of {corpus['shard_size']:,}, written): {_rate(corpus)}"
                if (corpus := result["ours"].get("corpus_path"))
                else ""
            )
            + (
                f"; packed, corpus path: {_rate(corpus)}"
                if (corpus := result.get("ours_packed", {}).get("corpus_path"))
                else ""
            )
            + (f"; packed sequences not run: {result['packed_error']}" if "packed_error" in result else "")
            + _peak_note(*(result[p] for p in ("straightforward", "ours", "ours_packed") if p in result))
        ),
    )
    table.add_column("")
    table.add_column(
        f"straightforward\n({result['straightforward']['dtype']}, batches of "
        f"{result['straightforward_batch_size']} in input order)",
        justify="right",
    )
    table.add_column(
        f"ours\n({result['ours']['dtype']}, distinct texts, sorted, ≤{result['max_batch_tokens']:,} "
        "tokens a batch)",
        justify="right",
    )
    paths = ["straightforward", "ours"]
    if "ours_packed" in result:
        paths.append("ours_packed")
        table.add_column(
            f"ours, packed\n(texts end to end; {result['speedup_packed']:.2f}×, max abs difference "
            f"{result['max_abs_difference_packed']:.2e})",
            justify="right",
        )
    for label, key, form in ENCODE_ROWS:
        table.add_row(label, *(_cell(result[path][key], form) for path in paths))
    return table
