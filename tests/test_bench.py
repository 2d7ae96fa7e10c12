"""`rerank-eval bench` on CPU with the tiny shape; its reference-style path against ours."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.bench.listwise import (
    Workload,
    model_flops,
    published_modules,
    random_reranker,
    reference_style_scores,
)
from rerank_eval.cli import app

PATH_FIELDS = {
    "seconds", "docs_per_second", "tokens_per_second", "ms_per_query_p50", "ms_per_query_p95",
    "peak_memory_bytes", "model_flops_per_second", "mfu_datasheet", "mfu_measured",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    with tempfile.TemporaryDirectory() as folder:
        yield random_reranker("tiny", torch.device("cpu"), torch.float32, Path(folder))


def test_bench_emits_json_with_every_field(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "--preset", "short", "--shape", "tiny", "--queries", "2", "--candidates", "20",
        "--matmul-size", "256", "--seed", "7", "--second-pass", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for path in ("reference_style", "ours"):
        assert set(data[path]) == PATH_FIELDS
        assert data[path]["docs_per_second"] > 0 and data[path]["mfu_measured"] > 0
        assert data[path]["mfu_datasheet"] is None  # no datasheet peak for a CPU
    assert data["speedup"] > 0 and data["max_score_difference"] <= 1e-4
    assert data["device"]["measured_matmul_flops"] > 0 and data["device"]["matmul_size"] == 256
    # the denominator runs in the model's dtype: float32 here (a CPU's bf16 product is emulated)
    assert data["device"]["matmul_dtype"] == data["model"]["dtype"] == "float32"
    assert data["workload"] == {"preset": "short", "queries": 2, "candidates": 20, "median_doc_tokens": 20,
                                "query_tokens": 12, "seed": 7}  # fmt: skip
    assert data["model"]["fused_rms_norm"] is True and data["model"]["trim_last_layer"] is True
    assert data["model"]["compile_elementwise"] is False  # the CPU defaults
    assert data["model"]["pad_multiple"] == 1 and data["model"]["pack_blocks"] is False
    assert "compiled elementwise off, lengths padded to a multiple of 1" in " ".join(result.output.split())
    second = data["second_pass"]
    assert set(second["reference_style"]) == set(second["ours"]) == PATH_FIELDS
    assert second["speedup"] == round(second["reference_style"]["seconds"] / second["ours"]["seconds"], 3)
    assert "speed-up" in result.output
    assert result.output.strip().endswith(f"wrote {out}") and '"speedup"' not in result.output


def test_a_matmul_peak_measured_low_is_said_not_shown_as_a_model_above_the_peak(monkeypatch):
    """On a busy machine the one matmul that measures the peak ran slower than the model: MFU
    127% was printed as it stood."""
    from rerank_eval.bench import listwise
    from rerank_eval.bench.table import PEAK_MEASURED_LOW

    args = ["bench", "--preset", "short", "--shape", "tiny", "--queries", "1", "--candidates", "8",
            "--matmul-size", "64"]  # fmt: skip
    monkeypatch.setattr(listwise, "measured_matmul_peak", lambda *a: 1.0)  # a peak far too low
    low = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert low.exit_code == 0, low.output
    assert PEAK_MEASURED_LOW in " ".join(low.output.split()) and "% *" in low.output
    monkeypatch.setattr(listwise, "measured_matmul_peak", lambda *a: 1e18)
    high = CliRunner(env={"COLUMNS": "400"}).invoke(app, args)
    assert high.exit_code == 0 and "above 100%" not in high.output and "% *" not in high.output


@pytest.mark.parametrize(
    ("settings", "mean_tokens", "min_blocks"),
    [({}, 30, 1), ({"context_length": 600, "max_doc_length": 120}, 60, 3)],
)
def test_fast_path_equals_reference_style(tiny, settings, mean_tokens, min_blocks):
    from dataclasses import replace

    original = tiny.settings
    tiny.settings = replace(original, **settings)
    try:
        requests = Workload("medium", 5, 24, mean_tokens, seed=3).requests()
        assert len(tiny.block_prompts(requests[0].query, list(requests[0].texts))) >= min_blocks
        ours = tiny.score_batch(requests)
        assert tiny.fused_norms == 4 * tiny.backbone.config.num_hidden_layers + 1
        ours_modules = [type(m) for m in tiny.backbone.modules()]
        with published_modules(tiny):  # transformers' own modules, as the published code runs
            assert not any(type(m).__module__.startswith("rerank_eval") for m in tiny.backbone.modules())
            references = [reference_style_scores(tiny, request)[0] for request in requests]
        assert [type(m) for m in tiny.backbone.modules()] == ours_modules
        assert sum("Fused" in type(m).__name__ for m in tiny.backbone.modules()) == tiny.fused_norms
        assert type(tiny.backbone.layers[-1]).__name__ == "TrimmedQwen3DecoderLayer"
        for reference, scores in zip(references, ours):
            assert np.abs(reference - scores).max() <= 1e-4
    finally:
        tiny.settings = original


def test_bench_packs_blocks_where_float32_attention_takes_no_mask(monkeypatch):
    """On CUDA float32 runs an attention without masks, which cannot take packed blocks: the bf16
    run packs them and its float32 comparison runs padded rows (emulated here on a CPU)."""
    import rerank_eval.bench.listwise as bench
    from rerank_eval.rerankers.listwise.qwen3_kernels import register_repeated_kv_attention

    monkeypatch.setattr(
        bench,
        "listwise_attention",
        lambda device, dtype: register_repeated_kv_attention() if dtype == torch.float32 else "sdpa",
    )
    result = bench.run_bench(
        "short", "tiny", 2, 10, device="cpu", dtype="bfloat16", matmul_size=64, pack_blocks=True
    )
    assert result["model"]["pack_blocks"] is True
    # bfloat16 against float32 scores of the same model: rankings nearly agree, but not exactly
    assert 0.5 < result["kendall_tau_vs_float32"] <= 1.0 and result["kendall_tau_queries"] > 0


def test_flops_formula(tiny):
    config = tiny.backbone.config
    parameters = sum(p.numel() for p in tiny.backbone.parameters()) - config.vocab_size * config.hidden_size
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim
    assert model_flops(tiny, [10, 3]) == 2 * parameters * 13 + attention * (55 + 6)


def test_synthetic_words_are_single_tokens(tiny):
    request = Workload("short", 1, 3, 20).requests()[0]
    words = request.texts[0].split()
    assert len(tiny.tokenizer(" " + request.texts[0], add_special_tokens=False)["input_ids"]) == len(words)


def test_bench_index_reports_doc_store_and_index_builds():
    result = CliRunner().invoke(app, ["bench-index", "--docs", "1000"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["documents"] == 1000
    timings = [("docstore_documents_per_second", "docstore_seconds"), ("documents_per_second", "seconds")]
    for rate, seconds in timings:
        # seconds are rounded to 0.01 and rates to whole documents (half a document a second is
        # 500 / rate² seconds on 1000 documents: 0.0077 s at 255 documents a second)
        assert abs(1000 / report[rate] - report[seconds]) <= 0.0051 + 500 / report[rate] ** 2
    assert report["docstore_bytes"] > 0 and report["index_bytes"] > 0
    assert report["docstore_peak_memory_bytes"] > 0
    assert report["peak_bytes_per_document"] == round(report["peak_memory_bytes"] / 1000)


def test_two_builds_of_the_synthetic_model_are_the_same_model(tmp_path):
    """The bf16 run's rank agreement is measured against a second, float32 build of the model:
    the two must share token ids and weights, or tau compares two different models."""
    first = random_reranker("tiny", torch.device("cpu"), torch.float32, tmp_path / "a")
    second = random_reranker("tiny", torch.device("cpu"), torch.float32, tmp_path / "b")
    request = Workload("short", 1, 8, 20).requests()[0]
    prompt = first.block_prompts(request.query, list(request.texts))[0]
    assert first.tokenizer(prompt)["input_ids"] == second.tokenizer(prompt)["input_ids"]
    assert np.array_equal(first.score_batch([request])[0], second.score_batch([request])[0])


def test_prompt_markup_is_tokenized_in_words_not_letters(tiny):
    from rerank_eval.rerankers.listwise.procedure import SYSTEM_PROMPT

    assert len(tiny.tokenizer(SYSTEM_PROMPT)["input_ids"]) < len(SYSTEM_PROMPT.split()) * 2
