"""`rerank-eval bench-encode` on CPU with the tiny shape: the straightforward path against ours."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rerank_eval.bench.encoder import (
    MAX_LENGTH,
    SHAPES,
    EncodeWorkload,
    flops_per_sequence,
    non_embedding_parameters,
    random_encoder_checkpoint,
)
from rerank_eval.cli import app
from rerank_eval.first_stage.dense.encoder import DenseEncoder

PATH_FIELDS = {
    "dtype", "seconds", "passages_per_second", "passages_encoded", "tokens", "padded_positions",
    "tokens_per_second", "tokenize_seconds", "model_flops_per_second", "mfu_datasheet", "mfu_measured",
    "query_seconds", "queries_per_second", "peak_gpu_memory_bytes",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    with tempfile.TemporaryDirectory() as folder:
        yield random_encoder_checkpoint("tiny", Path(folder))


def expected_parameters(layers: int, hidden: int, ffn: int) -> int:
    """Per layer: Q, K, V, O with biases; FFN in and out with biases; two LayerNorms."""
    attention = 4 * (hidden * hidden + hidden)
    feed_forward = hidden * ffn + ffn + ffn * hidden + hidden
    return layers * (attention + feed_forward + 2 * 2 * hidden)


def expected_flops(lengths: list[int], layers: int, hidden: int, parameters: int) -> float:
    return float(sum(2 * parameters * n + 4 * layers * hidden * n * n for n in lengths))


def test_bench_encode_emits_json_with_every_field(tmp_path):
    out = tmp_path / "bench-encode.json"
    result = CliRunner().invoke(app, [
        "bench-encode", "--shape", "tiny", "--passages", "300", "--device", "cpu",
        "--max-batch-tokens", "4096", "--seed", "3", "--second-pass", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert "speed-up" in result.output and "straightforward" in result.output
    assert result.output.strip().endswith(f"wrote {out}") and '"speedup"' not in result.output
    straightforward, ours = data["straightforward"], data["ours"]
    assert set(straightforward) == PATH_FIELDS and set(ours) == PATH_FIELDS | {"second_pass"}
    for path in (straightforward, ours):
        assert path["dtype"] == "float32" and path["passages_per_second"] > 0 and path["mfu_measured"] > 0
        assert path["mfu_datasheet"] is None and path["peak_gpu_memory_bytes"] is None  # a CPU
    assert data["speedup"] == round(straightforward["seconds"] / ours["seconds"], 3)
    again = ours["second_pass"]  # ours over the same passages once more
    assert data["speedup_second_pass"] == round(straightforward["seconds"] / again["seconds"], 3)
    assert again["tokens_per_second"] == pytest.approx(ours["tokens"] / again["seconds"], rel=2e-3)
    assert again["model_flops_per_second"] * again["seconds"] == pytest.approx(
        ours["model_flops_per_second"] * ours["seconds"], rel=2e-3
    )
    assert "second pass" in result.output and data["model"]["fused_kernels"] is False  # a CPU
    assert data["max_abs_difference"] <= 1e-5  # float32 on both paths: the same embeddings
    assert data["max_batch_tokens"] == 4096 and data["straightforward_batch_size"] == 32

    workload = data["workload"]
    assert (workload["passages"], workload["queries"], workload["seed"]) == (300, 30, 3)
    passages, _ = EncodeWorkload(300, 30, seed=3).texts()
    assert workload["distinct_passages"] == len(set(passages)) < 300  # some passages repeat
    assert straightforward["passages_encoded"] == 300
    assert ours["passages_encoded"] == workload["distinct_passages"]

    # MFU from the model's shape, computed here independently of the module's FLOP count
    model = data["model"]
    assert model["adapters"] is None and model["architecture"] == "JinaEmbeddingsV3Model"
    layers, hidden, ffn = model["num_hidden_layers"], model["hidden_size"], model["intermediate_size"]
    assert (layers, hidden, ffn) == (2, 64, 256)
    parameters = expected_parameters(layers, hidden, ffn)
    assert model["non_embedding_parameters"] == parameters
    measured = data["device"]["measured_matmul_flops"]
    assert data["device"]["matmul_dtype"] == "float32"  # ours' dtype on a CPU
    for path, texts in ((straightforward, passages), (ours, list(dict.fromkeys(passages)))):
        lengths = [min(len(text.split()) + 2, MAX_LENGTH) for text in texts]  # <s> words </s>
        assert path["tokens"] == sum(lengths)
        assert path["padded_positions"] >= path["tokens"]
        flops = expected_flops(lengths, layers, hidden, parameters)
        assert path["model_flops_per_second"] * path["seconds"] == pytest.approx(flops, rel=2e-3)
        assert path["mfu_measured"] == pytest.approx(path["model_flops_per_second"] / measured, abs=1e-4)
        assert path["tokens_per_second"] == pytest.approx(sum(lengths) / path["seconds"], rel=2e-3)
    assert ours["padded_positions"] < straightforward["padded_positions"]


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="packing compiles kernels")
def test_bench_encode_times_packed_texts_beside_the_others(tmp_path):
    """`--packed-sequences`: ours once more with texts end to end, the same embeddings (float32), no
    padding run, compared with the straightforward path of the same run."""
    out = tmp_path / "bench-encode.json"
    result = CliRunner().invoke(app, [
        "bench-encode", "--shape", "tiny", "--passages", "200", "--device", "cpu",
        "--max-batch-tokens", "4096", "--packed-sequences", "--corpus-shard-size", "64", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    straightforward, ours, packed = data["straightforward"], data["ours"], data["ours_packed"]
    assert "ours, packed" in result.output and set(packed) == PATH_FIELDS | {"corpus_path"}
    # the corpus path timed packed too (the default on CUDA), over the same shards
    packed_corpus, corpus = packed.pop("corpus_path"), ours.pop("corpus_path")
    assert packed_corpus["passages_encoded"] == corpus["passages_encoded"]
    assert packed_corpus["tokens_per_second"] * packed_corpus["seconds"] == pytest.approx(
        corpus["tokens_per_second"] * corpus["seconds"], rel=2e-3
    )
    assert "packed, corpus path:" in " ".join(result.output.split())
    assert data["speedup_packed"] == round(straightforward["seconds"] / packed["seconds"], 3)
    assert data["speedup_packed_second_pass"] is None  # no --second-pass
    assert data["max_abs_difference_packed"] <= 1e-5
    assert packed["tokens"] == ours["tokens"] == packed["padded_positions"] < ours["padded_positions"]
    assert packed["passages_encoded"] == ours["passages_encoded"]


def test_bench_encode_times_the_corpus_path(tmp_path):
    """`--corpus-shard-size`: encode_corpus over the passages in shards, each shard's distinct texts
    once, its FLOPs those of the tokens it ran (counted here from the workload's words)."""
    out = tmp_path / "bench-encode.json"
    result = CliRunner().invoke(app, [
        "bench-encode", "--shape", "tiny", "--passages", "200", "--device", "cpu",
        "--corpus-shard-size", "64", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    corpus = data["ours"]["corpus_path"]
    passages, _ = EncodeWorkload(200, 20).texts()
    shards = [list(dict.fromkeys(passages[start : start + 64])) for start in range(0, 200, 64)]
    assert (corpus["shard_size"], corpus["shards"]) == (64, 4)
    assert corpus["passages_encoded"] == sum(map(len, shards)) > data["ours"]["passages_encoded"]
    lengths = [min(len(text.split()) + 2, MAX_LENGTH) for shard in shards for text in shard]
    assert corpus["tokens_per_second"] * corpus["seconds"] == pytest.approx(sum(lengths), rel=2e-3)
    model = data["model"]
    layers, hidden = model["num_hidden_layers"], model["hidden_size"]
    flops = expected_flops(lengths, layers, hidden, model["non_embedding_parameters"])
    assert corpus["model_flops_per_second"] * corpus["seconds"] == pytest.approx(flops, rel=2e-3)
    assert "corpus path (shards of 64, written)" in " ".join(result.output.split())


def test_where_packing_cannot_run_the_bench_keeps_the_other_paths(tmp_path, monkeypatch):
    from rerank_eval.first_stage.dense import jina_kernels

    monkeypatch.setattr(jina_kernels, "compile_failure", lambda *args: None)
    monkeypatch.setattr(jina_kernels, "packing_failure", lambda *args: "ModuleNotFoundError: no varlen")
    result = CliRunner().invoke(app, [
        "bench-encode", "--shape", "tiny", "--passages", "100", "--device", "cpu", "--packed-sequences",
        "--json", str(tmp_path / "out.json"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["packed_error"] == "packed_sequences cannot run on cpu: ModuleNotFoundError: no varlen"
    assert "ours_packed" not in data and data["speedup"] > 0
    assert "packed sequences not run: packed_sequences cannot run on cpu" in " ".join(result.output.split())


def test_flops_formula(tiny):
    from transformers import AutoModel

    checkpoint, _ = tiny
    model = AutoModel.from_pretrained(str(checkpoint.folder))
    spec = SHAPES["tiny"]
    layers, hidden = spec["num_hidden_layers"], spec["hidden_size"]
    parameters = expected_parameters(layers, hidden, spec["intermediate_size"])
    assert non_embedding_parameters(model) == parameters
    flops_of = flops_per_sequence(model.config, parameters)
    assert flops_of(10) + flops_of(3) == expected_flops([10, 3], layers, hidden, parameters)


@pytest.mark.parametrize("max_batch_tokens", [512, 8192])
def test_fast_path_equals_straightforward_in_float32(tiny, max_batch_tokens):
    checkpoint, recipe = tiny
    passages, queries = EncodeWorkload(120, 20, seed=5).texts()
    encoder = DenseEncoder(checkpoint, recipe, "cpu", "float32", max_batch_tokens)
    for texts, side in ((passages, "passage"), (queries, "query")):
        fast, straightforward = encoder.embed(texts, side), encoder.embed_straightforward(texts, side)
        assert fast.shape == straightforward.shape == (len(texts), SHAPES["tiny"]["hidden_size"])
        assert np.abs(fast - straightforward).max() <= 1e-5
        assert np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-5)  # normalised
    assert encoder.model("passage").config.hidden_size == 64 and encoder.dtype == torch.float32


def test_workload_is_beir_like_and_words_are_single_tokens(tiny):
    checkpoint, recipe = tiny
    workload = EncodeWorkload(2000, 200, seed=1)
    passages, queries = workload.texts()
    assert (passages, queries) == EncodeWorkload(2000, 200, seed=1).texts()  # seeded
    words = [len(text.split()) for text in passages]
    assert 100 <= np.median(words) <= 140 and max(words) <= MAX_LENGTH - 2
    assert 0.02 <= 1 - len(set(passages)) / len(passages) <= 0.08  # ≈5% repeated
    assert 9 <= np.median([len(q.split()) for q in queries]) <= 15
    encoder = DenseEncoder(checkpoint, recipe, "cpu", "float32")
    rows = encoder.tokenize(passages[:50] + queries[:50], "passage")
    assert [len(row) for row in rows] == [len(t.split()) + 2 for t in passages[:50] + queries[:50]]
    tokenizer = encoder.tokenizer
    assert rows[0][0] == tokenizer.bos_token_id and rows[0][-1] == tokenizer.eos_token_id


def test_a_gpu_shape_on_a_cpu_says_it_takes_minutes(capsys):
    from rerank_eval.cli.bench import note_a_gpu_shape_on_a_cpu

    note_a_gpu_shape_on_a_cpu("xlm-roberta-large", "cpu")
    assert "xlm-roberta-large shape is sized for a GPU" in capsys.readouterr().err
    note_a_gpu_shape_on_a_cpu("tiny", "cpu")
    assert capsys.readouterr().err == ""
