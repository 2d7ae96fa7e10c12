"""The listwise last-token reranker against the published procedure, on tiny random checkpoints.

`reference_scores` below is a straightforward one-block-at-a-time implementation written from the
specification (its own prompt text, eager attention, every hidden state requested, hand-written
projector and merge); the production path must agree with it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.models.checkpoint import folder_sha256
from rerank_eval.models.common import rounded_up
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.listwise.procedure import (
    build_prompt,
    merge_blocks,
    plan_blocks,
    strip_special_strings,
)
from tests import builders
from tests.checkpoints import SPECIAL_TOKENS, build_listwise_checkpoint

DOCS = [
    "aspirin lowers the risk of heart attacks",
    "  leading and trailing spaces  ",
    "the quick brown fox jumps over the lazy dog " * 6,
    "数据检索与排序 😀",
    "vitamin d and calcium keep bones strong.",
    "short",
    'emoji 😀 and punctuation: (a), [b]; {c}! "quoted" it\'s ' * 3,
    "information retrieval ranks passages",
]
QUERY = "does aspirin prevent heart attacks?"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_listwise_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


# -- an independent implementation of the published procedure ----------------------------------

SPEC_PIECES = [
    "<|im_start|>system\n",
    (
        "You are a search relevance expert who can determine a ranking of the passages based on "
        "how relevant they are to the query. If the query is a question, how relevant a passage is "
        "depends on how well it answers the question. If not, try to analyze the intent of the "
        "query and assess how well each passage satisfies the intent. If an instruction is "
        "provided, you should follow the instruction when determining the ranking."
    ),
    "<|im_end|>\n<|im_start|>user\n",
]


def spec_prompt(query: str, docs: list[str]) -> str:
    passages = "\n".join(
        '<passage id="' + str(i) + '">\n' + d + "<|embed_token|>\n</passage>" for i, d in enumerate(docs)
    )
    return (
        "".join(SPEC_PIECES)
        + "I will provide you with "
        + str(len(docs))
        + " passages, each indicated by a numerical identifier. "
        + "Rank the passages based on their relevance to query: "
        + query
        + "\n"
        + passages
        + "\n"
        + "<query>\n"
        + query
        + "<|rerank_token|>\n</query>"
        + "<|im_end|>\n<|im_start|>assistant\n"
        + "<think>\n\n</think>\n\n"
    )


def reference_scores(
    folder: Path,
    query: str,
    docs: list[str],
    max_query=512,
    max_doc=2048,
    block_size=125,
    context=None,
    query_copies=2,
) -> np.ndarray:
    from transformers import AutoTokenizer, Qwen3Model

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = Qwen3Model.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()
    weights = load_file(str(folder / "model.safetensors"))
    w0, w2 = weights["projector.0.weight"].double(), weights["projector.2.weight"].double()
    context = context or tokenizer.model_max_length

    def clean(text):  # every occurrence, including one that a removal forms
        previous = None
        while previous != text:
            previous, text = text, text.replace("<|embed_token|>", "").replace("<|rerank_token|>", "")
        return text

    def cut(text, limit):  # on the text as given: removal comes when the block's prompt is built
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) >= limit:
            return tokenizer.decode(ids[:limit]), limit
        return text, len(ids)

    query, query_length = cut(query, max_query)
    query = clean(query)
    cut_docs = [(clean(text), length) for text, length in (cut(d, max_doc) for d in docs)]
    blocks, current, capacity = [], [], context - query_copies * query_length
    for i, (_, length) in enumerate(cut_docs):
        current.append(i)
        capacity -= length
        if len(current) >= block_size or capacity <= max_doc:
            blocks.append(current)
            current, capacity = [], context - query_copies * query_length
    if current:
        blocks.append(current)

    def project(h):
        return torch.relu(h.double() @ w0.T) @ w2.T

    doc_vectors, query_vectors = [], []
    embed_id = tokenizer.convert_tokens_to_ids("<|embed_token|>")
    rerank_id = tokenizer.convert_tokens_to_ids("<|rerank_token|>")
    for block in blocks:
        ids = torch.tensor([tokenizer(spec_prompt(query, [cut_docs[i][0] for i in block]))["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        doc_vectors.append(project(hidden[ids[0] == embed_id]).numpy())
        query_vectors.append(project(hidden[ids[0] == rerank_id]).numpy()[0])

    def cos(a, b):
        return a @ b / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b))

    weights_ = np.array([np.max((1 + cos(d, q)) / 2) for d, q in zip(doc_vectors, query_vectors)])
    final_query = sum(w * q for w, q in zip(weights_, query_vectors)) / weights_.sum()
    return np.concatenate([cos(d, final_query) for d in doc_vectors])


# -- prompt, special strings, truncation, blocks, merge -------------------------------------------


def test_prompt_is_byte_identical_to_spec():
    docs = ["first doc", 'second "doc"\nwith newline']
    assert build_prompt("a query", docs) == spec_prompt("a query", docs)
    assert build_prompt("q", ["d"]).encode() == (
        b"<|im_start|>system\n" + SPEC_PIECES[1].encode() + b"<|im_end|>\n<|im_start|>user\n"
        b"I will provide you with 1 passages, each indicated by a numerical identifier. Rank the passages "
        b'based on their relevance to query: q\n<passage id="0">\nd<|embed_token|>\n</passage>\n'
        b"<query>\nq<|rerank_token|>\n</query><|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_instruction_piece_is_optional():
    with_instruction = build_prompt("q", ["d"], instruction="be strict")
    assert "<instruct>\nbe strict\n</instruct>\n<passage" in with_instruction
    assert "<instruct>" not in build_prompt("q", ["d"])


def test_the_instruction_setting_reaches_the_prompt_where_the_spec_puts_it(checkpoint):
    """After the query, before the first passage (the spec's pieces 4 to 6); none without it."""
    with_instruction = load_reranker(str(checkpoint), instruction="prefer reviews").block_prompts("q", ["d"])[
        0
    ]
    assert (
        'relevance to query: q\n<instruct>\nprefer reviews\n</instruct>\n<passage id="0">\nd<|embed_token|>'
        in (with_instruction)
    )
    assert "<instruct>" not in load_reranker(str(checkpoint)).block_prompts("q", ["d"])[0]


def test_special_strings_are_removed_even_when_removal_forms_them():
    assert strip_special_strings("a<|embed_token|>b<|rerank_token|>c") == "abc"
    assert strip_special_strings("x<|embed_<|rerank_token|>token|>y") == "xy"


def test_special_strings_in_inputs_do_not_add_markers(checkpoint):
    reranker = load_reranker(str(checkpoint))
    docs = ["one <|embed_token|> two", "<|rerank_token|>three"]
    prompt = reranker.block_prompts("q <|rerank_token|>", docs)[0]
    assert prompt.count("<|embed_token|>") == 2 and prompt.count("<|rerank_token|>") == 1
    scores = reranker.score("q <|rerank_token|>", docs)
    assert np.allclose(scores, reference_scores(checkpoint, "q <|rerank_token|>", docs), atol=1e-5)


def test_special_strings_count_in_truncation_and_blocks(checkpoint):
    """Lengths come from the texts as given (a special string is one token there), so a document
    holding special strings is cut and blocked as the published procedure cuts and blocks it."""
    docs = [f"aspirin <|embed_token|> heart {'<|rerank_token|>' * (i % 3)} dog fox" * 3 for i in range(9)]
    settings = {"context_length": 90, "max_doc_length": 12, "max_query_length": 4}
    reranker = load_reranker(str(checkpoint), **settings)
    assert len(reranker.block_prompts(QUERY + " <|embed_token|>", docs)) >= 2
    expected = reference_scores(
        checkpoint, QUERY + " <|embed_token|>", docs, max_query=4, max_doc=12, context=90
    )
    assert np.abs(np.array(reranker.score(QUERY + " <|embed_token|>", docs)) - expected).max() <= 1e-5


def test_truncation_cuts_documents_and_query_at_their_limits(checkpoint):
    reranker = load_reranker(str(checkpoint), max_doc_length=5, max_query_length=3)
    tokenizer = reranker.tokenizer
    long_doc = "the quick brown fox jumps over the lazy dog"
    ids = tokenizer.encode(long_doc, add_special_tokens=False)
    assert len(ids) > 5
    prompt = reranker.block_prompts("aspirin heart attacks prevention", [long_doc, "short"])[0]
    cut_doc = tokenizer.decode(ids[:5])
    cut_query = tokenizer.decode(
        tokenizer.encode("aspirin heart attacks prevention", add_special_tokens=False)[:3]
    )
    assert f'<passage id="0">\n{cut_doc}<|embed_token|>' in prompt
    assert f"<query>\n{cut_query}<|rerank_token|>" in prompt
    assert f"relevance to query: {cut_query}\n" in prompt


def test_block_boundaries_follow_capacity_rule():
    # capacity starts at 100 - 2*10 = 80; a block closes once capacity <= 20 or it holds block_size docs
    lengths = [30, 25, 10, 5, 40, 3]
    assert plan_blocks(lengths, 10, 100, 20, 125) == [range(0, 3), range(3, 6)]
    assert plan_blocks(lengths, 10, 100, 20, 2) == [range(0, 2), range(2, 4), range(4, 6)]
    assert plan_blocks([61], 10, 100, 20, 125) == [range(0, 1)]  # 80 - 61 = 19 <= 20
    assert plan_blocks([59, 1], 10, 100, 20, 125) == [range(0, 2)]  # 21 > 20, then 20 <= 20
    assert plan_blocks([], 10, 100, 20, 125) == []


def test_merge_is_weighted_mean_of_block_query_vectors():
    rng = np.random.default_rng(3)
    docs = [rng.normal(size=(3, 4)), rng.normal(size=(2, 4))]
    queries = [rng.normal(size=4), rng.normal(size=4)]

    def cos(a, b):
        return a @ b / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))

    weights = [max((1 + cos(d, q)) / 2) for d, q in zip(docs, queries)]
    final = (weights[0] * queries[0] + weights[1] * queries[1]) / (weights[0] + weights[1])
    expected = np.concatenate([cos(docs[0], final), cos(docs[1], final)])
    assert np.allclose(merge_blocks(docs, queries), expected, atol=1e-12)
    assert np.allclose(merge_blocks(docs[:1], queries[:1]), cos(docs[0], queries[0]), atol=1e-12)


# -- the model path against the reference -----------------------------------------------------------


def test_single_block_matches_reference(checkpoint):
    reranker = load_reranker(str(checkpoint))
    assert len(reranker.block_prompts(QUERY, DOCS)) == 1
    assert (
        np.abs(np.array(reranker.score(QUERY, DOCS)) - reference_scores(checkpoint, QUERY, DOCS)).max()
        <= 1e-5
    )


def test_multi_block_matches_reference(checkpoint):
    settings = {"context_length": 120, "max_doc_length": 40, "max_query_length": 8}
    reranker = load_reranker(str(checkpoint), **settings)
    assert len(reranker.block_prompts(QUERY, DOCS)) >= 3
    expected = reference_scores(checkpoint, QUERY, DOCS, max_query=8, max_doc=40, context=120)
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


def test_block_size_limit_matches_reference(checkpoint):
    reranker = load_reranker(str(checkpoint), block_size=3)
    expected = reference_scores(checkpoint, QUERY, DOCS, block_size=3)
    assert np.abs(np.array(reranker.score(QUERY, DOCS)) - expected).max() <= 1e-5


def requests_for(queries: list[str]) -> list[RerankRequest]:
    out = []
    for n, query in enumerate(queries):
        docs = tuple(DOCS[n % 3 :] + DOCS[: n % 3])
        out.append(
            RerankRequest(f"q{n}", query, tuple(map(str, range(len(docs)))), docs, tuple(range(len(docs))))
        )
    return out


def test_scores_do_not_depend_on_batch_composition(checkpoint):
    queries = [QUERY, "vitamin d", "数据", "a much longer query about the lazy dog and the quick fox"]
    settings = {"context_length": 300, "max_doc_length": 60}
    packed = load_reranker(str(checkpoint), max_batch_tokens=100_000, **settings)
    alone = load_reranker(str(checkpoint), max_batch_tokens=1, **settings)  # one block per forward pass
    requests = requests_for(queries)
    together = packed.score_batch(requests)
    for request, batched in zip(requests, together):
        single = alone.score_batch([request])[0]
        assert batched.dtype == np.float32
        assert np.abs(batched - single).max() <= 1e-5
        expected = reference_scores(checkpoint, request.query, list(request.texts), max_doc=60, context=300)
        assert np.abs(batched - expected).max() <= 1e-5
    reordered = packed.score_batch(requests[::-1])[::-1]
    for a, b in zip(together, reordered):
        assert np.abs(a - b).max() <= 1e-5


def test_next_batch_is_queued_before_the_previous_one_is_copied_back(checkpoint, monkeypatch):
    settings = {"context_length": 120, "max_doc_length": 40, "max_query_length": 8}  # several blocks
    reranker = load_reranker(str(checkpoint), max_batch_tokens=1, **settings)
    requests = requests_for([QUERY, "vitamin d"])
    expected = reranker.score_batch(requests)
    events: list[str] = []
    launch, collect = reranker._launch, reranker._collect

    def launching(batch):
        events.append(f"launch {batch[0].query_id}/{batch[0].docs.start}")
        return launch(batch)

    def collecting(batch, projected):
        events.append(f"collect {batch[0].query_id}/{batch[0].docs.start}")
        return collect(batch, projected)

    monkeypatch.setattr(reranker, "_launch", launching)
    monkeypatch.setattr(reranker, "_collect", collecting)
    scores = reranker.score_batch(requests)
    launched = [e.split()[1] for e in events if e.startswith("launch")]
    assert len(launched) >= 3  # one block per forward pass
    interleaved = [f"launch {launched[0]}"]
    for before, after in itertools.pairwise(launched):
        interleaved += [f"launch {after}", f"collect {before}"]
    assert events == [*interleaved, f"collect {launched[-1]}"]
    assert all(np.array_equal(a, b) for a, b in zip(scores, expected))


def test_forward_pass_builds_no_mask_so_nothing_waits_for_the_gpu(checkpoint, monkeypatch):
    """Building a mask from nothing makes transformers read a GPU tensor on the host (its check for
    packed sequences), which would wait for every queued batch; the reranker passes none-masks."""
    from transformers.models.qwen3 import modeling_qwen3

    reranker = load_reranker(str(checkpoint))
    expected = reranker.score(QUERY, DOCS)

    def refuse(**kwargs):
        raise AssertionError("a mask was built")

    monkeypatch.setattr(modeling_qwen3, "create_causal_mask", refuse)
    assert np.array_equal(reranker.score(QUERY, DOCS), expected)


def test_each_distinct_document_is_tokenized_once_per_dataset(checkpoint, monkeypatch):
    reranker = load_reranker(str(checkpoint), max_doc_length=5)
    requests = requests_for([QUERY, "vitamin d", QUERY + " again"])  # the same documents each time
    expected = [load_reranker(str(checkpoint), max_doc_length=5).score_batch([r])[0] for r in requests]
    seen: list[str] = []
    truncate = reranker._truncate

    def recording(texts, limit):
        seen.extend(texts)
        return truncate(texts, limit)

    monkeypatch.setattr(reranker, "_truncate", recording)
    scores = reranker.score_batch(requests[:2]) + reranker.score_batch(requests[2:])
    documents = [t for t in seen if t in DOCS]
    assert sorted(documents) == sorted(set(DOCS))  # queries apart, every document exactly once
    assert all(np.abs(a - b).max() <= 1e-6 for a, b in zip(scores, expected))  # batched or alone
    cut = sum(1 for d in DOCS if len(reranker.tokenizer(d, add_special_tokens=False)["input_ids"]) >= 5)
    assert reranker.runtime_stats()["truncated_documents"] == 3 * cut  # counted per occurrence


def test_document_memory_cleared_at_its_limit_keeps_answering(checkpoint, monkeypatch):
    from rerank_eval.rerankers.listwise import prompting

    monkeypatch.setattr(prompting, "DOCUMENT_CACHE_LIMIT", 3)
    reranker = load_reranker(str(checkpoint), max_doc_length=5)
    fresh = load_reranker(str(checkpoint), max_doc_length=5)
    first = reranker._truncated_documents(DOCS[:2])
    assert first == fresh._truncate(DOCS[:2], 5)[:2]
    assert (
        reranker._truncated_documents([DOCS[0], DOCS[2], DOCS[3]])
        == fresh._truncate([DOCS[0], DOCS[2], DOCS[3]], 5)[:2]
    )
    assert len(reranker._documents) == 3


def test_float32_attention_for_cuda_repeats_key_value_heads_and_keeps_scores(checkpoint, monkeypatch):
    from transformers import AttentionInterface

    from rerank_eval.rerankers.listwise import model as listwise
    from rerank_eval.rerankers.listwise import qwen3_kernels as qwen3_fast

    assert listwise.listwise_attention(torch.device("cuda"), torch.float32) == qwen3_fast.REPEATED_KV_SDPA
    assert listwise.listwise_attention(torch.device("cuda"), torch.bfloat16) in ("sdpa", "flash_attention_2")
    assert listwise.listwise_attention(torch.device("cpu"), torch.float32) == "sdpa"
    reranker = load_reranker(str(checkpoint), context_length=300, max_doc_length=60)
    requests = requests_for([QUERY, "vitamin d"])
    expected = reranker.score_batch(requests)
    groups = []

    def recording(module, query, key, *args, **kwargs):
        groups.append(query.shape[1] // key.shape[1])
        return qwen3_fast.causal_sdpa_repeated_kv(module, query, key, *args, **kwargs)

    AttentionInterface.register(qwen3_fast.REPEATED_KV_SDPA, recording)  # the name registered, spied
    monkeypatch.setattr(reranker.backbone.config, "_attn_implementation", qwen3_fast.REPEATED_KV_SDPA)
    try:
        scores = reranker.score_batch(requests)
    finally:
        AttentionInterface.register(qwen3_fast.REPEATED_KV_SDPA, qwen3_fast.causal_sdpa_repeated_kv)
    config = reranker.backbone.config
    assert set(groups) == {config.num_attention_heads // config.num_key_value_heads} != {1}
    assert all(np.abs(a - b).max() <= 1e-6 for a, b in zip(scores, expected))


def test_last_hidden_state_is_last_layer_after_final_norm(checkpoint):
    """Pins the transformers range: Qwen3Model.last_hidden_state == hidden_states[-1] (post-norm)."""
    reranker = load_reranker(str(checkpoint))
    ids = torch.tensor([reranker.tokenizer(build_prompt("q", ["a", "b"]))["input_ids"]])
    with torch.no_grad():
        out = reranker.backbone(input_ids=ids, output_hidden_states=True)
        assert len(out.hidden_states) == reranker.backbone.config.num_hidden_layers + 1
        assert torch.equal(out.last_hidden_state, out.hidden_states[-1])
        # hidden_states[-1] is after the final RMSNorm: undoing the norm weight changes it.
        assert not torch.allclose(
            out.hidden_states[-1], out.hidden_states[-1] / reranker.backbone.norm.weight
        )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_rms_norm_setting_keeps_scores_and_is_recorded(checkpoint, dtype):
    fused = load_reranker(str(checkpoint), dtype=dtype)
    plain = load_reranker(str(checkpoint), dtype=dtype, fused_rms_norm=False)
    layers = fused.backbone.config.num_hidden_layers
    assert fused.describe()["fused_rms_norms"] == 4 * layers + 1  # 2 per layer, q/k norms, final
    assert fused.describe()["settings"]["fused_rms_norm"] is True
    assert plain.describe()["settings"]["fused_rms_norm"] is False
    assert plain.describe()["fused_rms_norms"] == 0
    assert not any("Fused" in type(m).__name__ for m in plain.backbone.modules())
    assert fused.score_identity() != plain.score_identity()  # journals never mix the two
    difference = np.abs(np.array(fused.score(QUERY, DOCS)) - np.array(plain.score(QUERY, DOCS))).max()
    if dtype == "float32":
        assert difference <= 1e-6
    else:  # one rounding fewer per norm: visible, and small
        assert 0 < difference <= 2e-2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_trim_last_layer_setting_keeps_scores_and_is_recorded(checkpoint, dtype):
    settings = {"context_length": 120, "max_doc_length": 40, "max_query_length": 8, "dtype": dtype}
    trimmed = load_reranker(str(checkpoint), **settings)
    full = load_reranker(str(checkpoint), trim_last_layer=False, **settings)
    assert type(trimmed.backbone.layers[-1]).__name__ == "TrimmedQwen3DecoderLayer"
    assert not any(type(m).__module__.endswith("qwen3_kernels") for m in full.backbone.layers)
    assert trimmed.describe()["settings"]["trim_last_layer"] is True
    assert full.describe()["settings"]["trim_last_layer"] is False
    assert trimmed.score_identity() != full.score_identity()  # journals never mix the two
    requests = requests_for([QUERY, "vitamin d", "数据"])
    assert len(trimmed.block_prompts(QUERY, DOCS)) >= 2
    difference = max(
        np.abs(a - b).max() for a, b in zip(trimmed.score_batch(requests), full.score_batch(requests))
    )
    assert difference <= (1e-6 if dtype == "float32" else 2e-2)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs a C++ compiler")
def test_compile_elementwise_setting_keeps_scores_and_is_recorded(checkpoint):
    settings = {"context_length": 120, "max_doc_length": 40, "max_query_length": 8}
    compiled = load_reranker(str(checkpoint), compile_elementwise=True, **settings)
    plain = load_reranker(str(checkpoint), **settings)
    assert plain.describe()["settings"]["compile_elementwise"] is False  # CPU default: off
    assert compiled.describe()["settings"]["compile_elementwise"] is True
    assert compiled.score_identity() != plain.score_identity()
    assert {type(layer.mlp).__name__ for layer in compiled.backbone.layers} == {"CompiledQwen3MLP"}
    requests = requests_for([QUERY, "vitamin d"])
    difference = max(
        np.abs(a - b).max() for a, b in zip(compiled.score_batch(requests), plain.score_batch(requests))
    )
    assert difference <= 1e-6
    compiled.use_published_modules(True)
    assert not any(type(m).__module__.startswith("rerank_eval") for m in compiled.backbone.modules())


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="needs a C++ compiler")
def test_compiled_kernels_built_at_load_are_the_ones_scoring_runs(checkpoint):
    import torch._dynamo

    torch._dynamo.reset()  # what earlier tests compiled would otherwise answer for the load
    model = load_reranker(str(checkpoint), compile_elementwise=True, max_doc_length=40)
    # (config.patch, not monkeypatch: undoing a monkeypatch leaves dynamo's config without the key)
    with torch._dynamo.config.patch(error_on_recompile=True):
        model.score_batch(requests_for([QUERY, "vitamin d"]))  # a compilation here would raise


def test_score_command_says_in_one_line_when_compile_cannot_build(checkpoint, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(DOCS[:3]) + "\n", encoding="utf-8")
    environment = {**os.environ, "CXX": str(tmp_path / "no-compiler"), "CC": str(tmp_path / "no-compiler"),
                   "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # fmt: skip
    command = [sys.executable, "-m", "rerank_eval", "score", "--model", str(checkpoint), "--query", QUERY,
               "--docs", str(docs), "--set", "compile_elementwise=true"]  # fmt: skip
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 2 and not finished.stdout
    message = finished.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "torch.compile cannot build kernels on cpu" in message and "compile_elementwise=false" in message


@pytest.mark.parametrize(("device", "triton", "expected"), [("cpu", True, False), ("cuda", True, True),
                                                          ("cuda", False, False)])  # fmt: skip
def test_compile_elementwise_defaults_to_cuda_with_triton(monkeypatch, device, triton, expected):
    import torch.utils._triton

    from rerank_eval.compiling import compile_by_default

    monkeypatch.setattr(torch.utils._triton, "has_triton", lambda: triton)
    assert compile_by_default(torch.device(device)) is expected


def test_compile_that_cannot_build_falls_back_by_default_and_fails_when_asked(
    checkpoint, monkeypatch, capsys
):
    from rerank_eval.rerankers.listwise import reranker as listwise

    monkeypatch.setattr(listwise, "compile_by_default", lambda device: True)
    monkeypatch.setattr(listwise, "compile_failure", lambda *args: "InductorError: no C compiler")
    model = load_reranker(str(checkpoint))
    assert model.describe()["settings"]["compile_elementwise"] is False  # what ran is recorded
    assert {type(layer.mlp).__name__ for layer in model.backbone.layers} == {"Qwen3MLP"}
    assert "no C compiler" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"torch.compile cannot build kernels .*compile_elementwise=false$"):
        load_reranker(str(checkpoint), compile_elementwise=True)


def test_pad_multiple_rounds_forward_lengths_and_keeps_scores(checkpoint):
    exact = load_reranker(str(checkpoint), **PACKING_SETTINGS)
    padded = load_reranker(str(checkpoint), pad_multiple=48, **PACKING_SETTINGS)
    assert exact.describe()["settings"]["pad_multiple"] == 1  # CPU default: no rounding
    assert padded.describe()["settings"]["pad_multiple"] == 48
    assert padded.score_identity() == exact.score_identity()  # same scores: journals may mix them
    context = exact.settings.context_length  # a multiple past it once sized rows of 10**9 tokens
    with pytest.raises(UserError, match=rf"pad_multiple .* at most the context length \({context:,}\), got"):
        load_reranker(str(checkpoint), pad_multiple=context + 1, **PACKING_SETTINGS)
    seen = _recorded_passes(padded)
    requests = requests_for([QUERY, "vitamin d", "数据"])
    padded_scores = padded.score_batch(requests)
    assert any(blocks > 1 for blocks, *_ in seen)
    for blocks, (rows, width), _, longest in seen:
        assert rows == blocks and width % 48 == 0 and longest <= width < longest + 48
        assert rows * width <= 1200
    # the budget counts rounded lengths: 1,040 tokens hold two prompts of ≤ 517 but not two of 528
    blocks = padded._blocks(requests)

    def widest(model):  # the most padded tokens of a batch, its lengths rounded up to 48
        batches = model._batches(blocks)
        return max(len(batch) * -(-max(len(b.input_ids) for b in batch) // 48) * 48 for batch in batches)

    for model in (exact, padded):
        model.settings = replace(model.settings, max_batch_tokens=1040)
    assert widest(exact) > 1040 >= widest(padded)
    # an out-of-memory message names the block's own length, not the padded width
    padded.score_batch(requests[:1])
    last = padded._last_block_tokens
    assert last in {len(b.input_ids) for b in blocks} and last % 48
    assert f"one block of {last:,} tokens" in padded.out_of_memory_message(requests[:1])
    for a, b in zip(exact.score_batch(requests), padded_scores):
        assert np.abs(a - b).max() <= 1e-6


def _recorded_passes(model) -> list[list]:
    """[blocks, input shape, tokens of the blocks, longest block] of each forward pass from now on."""
    seen: list[list] = []
    launch, forward = model._launch, model._forward

    def recording_launch(batch):
        lengths = [len(b.input_ids) for b in batch]
        seen.append([len(batch), None, sum(lengths), max(lengths)])
        return launch(batch)

    def recording_forward(inputs):
        seen[-1][1] = tuple(inputs.input_ids.shape)
        return forward(inputs)

    model._launch, model._forward = recording_launch, recording_forward
    return seen


PACKING_SETTINGS = {
    "context_length": 120,
    "max_doc_length": 40,
    "max_query_length": 8,
    "max_batch_tokens": 1200,
}


@pytest.mark.parametrize(("trim", "multiple"), [(True, 1), (False, 1), (True, 48)])
def test_packed_blocks_score_as_padded_ones_under_transformers_mask(checkpoint, trim, multiple):
    padded = load_reranker(str(checkpoint), trim_last_layer=trim, **PACKING_SETTINGS)
    packed = load_reranker(
        str(checkpoint), trim_last_layer=trim, pack_blocks=True, pad_multiple=multiple, **PACKING_SETTINGS
    )
    assert padded.describe()["settings"]["pack_blocks"] is False  # SDPA takes no sequence boundaries
    assert packed.score_identity() == padded.score_identity()
    seen = _recorded_passes(packed)
    requests = requests_for([QUERY, "vitamin d", "数据"])
    scores = packed.score_batch(requests)
    assert any(blocks > 1 for blocks, *_ in seen)
    for _, (rows, width), tokens, _ in seen:  # one row: the blocks, then padding up to the multiple
        assert rows == 1 and width % multiple == 0 and tokens <= width < tokens + multiple
    for a, b in zip(padded.score_batch(requests), scores):
        assert np.abs(a - b).max() <= 1e-6


def fake_flash_varlen(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, dropout_p=0.0,
    softmax_scale=None, causal=False, window_size=(-1, -1), **kwargs,
):  # fmt: skip
    """flash_attn_varlen_func's contract on a CPU: (tokens, heads, d) tensors, sequences given by
    cumulative lengths, each attending causally to itself alone, within window_size[0] keys back."""
    assert causal and cu_seqlens_q.dtype == torch.int32 and isinstance(max_seqlen_q, int)
    bounds = cu_seqlens_q.tolist()
    assert cu_seqlens_k.tolist() == bounds and max_seqlen_q == max_seqlen_k == max(np.diff(bounds))
    FLASH_CALLS.append(bounds)
    parts = []
    for a, b in itertools.pairwise(bounds):
        rows, keys = torch.arange(b - a)[:, None], torch.arange(b - a)[None]
        allowed = (keys <= rows) & ((rows - keys <= window_size[0]) if window_size[0] >= 0 else True)
        heads_first = [t[a:b].transpose(0, 1)[None] for t in (q, k, v)]
        attended = torch.nn.functional.scaled_dot_product_attention(
            *heads_first, attn_mask=allowed, scale=softmax_scale, enable_gqa=True
        )
        parts.append(attended[0].transpose(0, 1))
    return torch.cat(parts)


FLASH_CALLS: list[list[int]] = []


@pytest.fixture
def fake_flash_attn(monkeypatch):
    """transformers' own FlashAttention integration, with flash-attn's kernels replaced by the
    fake above (flash-attn needs CUDA); records whether transformers looked for packed sequences
    in the positions (its attention kernel's or its mask builder's check), which reads a GPU tensor
    on the host."""
    import transformers.modeling_flash_attention_utils as flash_utils

    def plain_flash(*args, **kwargs):
        raise AssertionError("packed blocks went to the kernel without sequence boundaries")

    looked = []
    # transformers keeps the kernels it loaded in module globals: load (the fakes) afresh, and
    # forget them afterwards
    monkeypatch.setattr(flash_utils, "_loaded_implementation", None)
    monkeypatch.setattr(
        flash_utils,
        "_lazy_imports",
        lambda *args, **kwargs: (
            plain_flash,
            fake_flash_varlen,
            None,
            flash_utils._pad_input,
            flash_utils._unpad_input,
        ),
    )
    import transformers.masking_utils as masking_utils

    for module, name in (
        (flash_utils, "_is_packed_sequence"),
        (masking_utils, "find_packed_sequence_indices"),
    ):
        original = getattr(module, name)

        def spy(*args, _original=original, **kwargs):
            looked.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    FLASH_CALLS.clear()
    return looked


def on_flash_attention(model, **settings):
    """The model as it loads where flash-attn is installed (the kernel itself is faked)."""
    model.backbone.config._attn_implementation = model.attention = "flash_attention_2"
    model.settings = replace(model.settings, **{"pack_blocks": model._resolved_packing(None), **settings})
    return model


def sliding_checkpoint(folder: Path) -> Path:
    """The tiny checkpoint with its last layer attending to 16 keys back at most."""
    path = build_listwise_checkpoint(folder)
    config = json.loads((path / "config.json").read_text())
    config.update(use_sliding_window=True, sliding_window=16, max_window_layers=1,
                  layer_types=["full_attention", "sliding_attention"])  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("packed", "trim", "sliding", "multiple"), [
    (True, True, False, 1), (True, False, False, 1), (True, True, True, 1), (True, False, True, 1),
    (True, True, False, 48), (False, True, False, 48), (False, False, True, 1),
])  # fmt: skip
def test_blocks_score_as_one_at_a_time_through_flash_attention(
    checkpoint, tmp_path, fake_flash_attn, packed, trim, sliding, multiple
):
    path = sliding_checkpoint(tmp_path / "sliding") if sliding else checkpoint
    settings = {**PACKING_SETTINGS, "trim_last_layer": trim}
    alone = load_reranker(str(path), **{**settings, "max_batch_tokens": 1})  # one block per pass
    model = on_flash_attention(load_reranker(str(path), **settings), pad_multiple=multiple)
    assert model.settings.pack_blocks  # the default with FlashAttention
    if not packed:
        model.settings = replace(model.settings, pack_blocks=False)
    requests = requests_for([QUERY, "vitamin d", "数据"])
    scores = model.score_batch(requests)
    # several blocks in one row, or several rows each one sequence of the padded width
    assert any(len(bounds) > 2 for bounds in FLASH_CALLS)
    assert packed or all(len(set(np.diff(bounds))) == 1 for bounds in FLASH_CALLS)
    assert not fake_flash_attn  # the boundaries were given: nothing read the positions on the host
    # the trimmed layer gets no mask either: without each marker's block start it would attend to
    # the blocks before its own, and these scores would differ
    for a, b in zip(alone.score_batch(requests), scores):
        assert np.abs(a - b).max() <= 1e-6


@pytest.mark.parametrize("multiple", [1, 48])
def test_packed_boundaries_match_transformers_reading_of_positions(checkpoint, multiple):
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    model = on_flash_attention(load_reranker(str(checkpoint), **PACKING_SETTINGS), pad_multiple=multiple)
    batch = max(model._batches(model._blocks(requests_for([QUERY, "vitamin d"]))), key=len)
    assert len(batch) > 1
    inputs = model._packed(batch, [b.markers for b in batch])
    (cumulative_q, cumulative_k), (longest_q, longest_k) = prepare_fa_kwargs_from_position_ids(
        inputs.positions
    )
    assert torch.equal(inputs.boundaries["cu_seq_lens_q"], cumulative_q)
    assert torch.equal(inputs.boundaries["cu_seq_lens_k"], cumulative_k)
    assert inputs.boundaries["max_length_q"] == int(longest_q) == int(longest_k)
    # each marker's position in the row, and its block's start
    offset, read = 0, 0
    for block in batch:
        markers = slice(read, read + len(block.markers))
        assert inputs.keep[0, markers].tolist() == [offset + m for m in block.markers]
        assert set(inputs.starts[0, markers].tolist()) == {offset}
        offset, read = offset + len(block.input_ids), read + len(block.markers)
    assert read == inputs.keep.shape[1]


def test_packing_refused_where_attention_takes_no_mask(checkpoint, monkeypatch):
    from rerank_eval.rerankers.listwise import reranker as listwise
    from rerank_eval.rerankers.listwise.qwen3_kernels import register_repeated_kv_attention

    monkeypatch.setattr(
        listwise, "listwise_attention", lambda device, dtype: register_repeated_kv_attention()
    )
    with pytest.raises(UserError, match="pack_blocks needs FlashAttention or SDPA with a mask"):
        load_reranker(str(checkpoint), pack_blocks=True)


def test_packed_batches_fill_the_budget_in_order():
    from rerank_eval.models.common import packed_batches

    assert packed_batches([5, 3, 4, 10, 2, 1], 8) == [[0, 1], [2], [3], [4, 5]]
    # rounded up to 3: 5 + 3 takes 9 tokens and 3 + 4 takes 9, more than 8
    assert packed_batches([5, 3, 4, 10, 2, 1], 8, multiple=3) == [[0], [1], [2], [3], [4, 5]]


def test_pad_multiple_must_be_positive(checkpoint):
    with pytest.raises(UserError, match=r"pad_multiple .* positive integer"):
        load_reranker(str(checkpoint), pad_multiple=0)


# -- loading ----------------------------------------------------------------------------------------


def test_directory_with_jina_architecture_needs_no_flag(checkpoint):
    reranker = load_reranker(str(checkpoint))
    assert reranker.family == "listwise-last-token"
    description = reranker.describe()
    assert description["content_sha256"] == folder_sha256(checkpoint)
    assert description["settings"]["max_doc_length"] == 2048
    assert description["settings"]["block_size"] == 125
    assert description["context_length_from"] == "tokenizer.model_max_length"
    assert description["dtype"] == "float32"


def test_bfloat16_checkpoint_without_lm_head_loads(tmp_path):
    folder = build_listwise_checkpoint(tmp_path / "bf16", dtype=torch.bfloat16, with_lm_head=False)
    scores = load_reranker(str(folder)).score(QUERY, DOCS[:3])
    assert np.allclose(scores, reference_scores(folder, QUERY, DOCS[:3]), atol=1e-5)


def test_unset_model_max_length_falls_back_to_config(tmp_path):
    folder = build_listwise_checkpoint(tmp_path / "unset", model_max_length=None)
    reranker = load_reranker(str(folder))
    assert reranker.settings.context_length == 8192
    assert reranker.describe()["context_length_from"] == "config.max_position_embeddings"
    # a limit of `true` is none (it read as one token), and a config of 10**10 positions no length
    settings_path = folder / "tokenizer_config.json"
    settings = json.loads(settings_path.read_text())
    settings_path.write_text(json.dumps({**settings, "model_max_length": True}))
    assert load_reranker(str(folder)).settings.context_length == 8192
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 10**10}))
    with pytest.raises(UserError) as refused:
        load_reranker(str(folder))
    assert str(refused.value) == (
        f"checkpoint {folder}: neither its tokenizer nor its config declares a context length "
        "(max_position_embeddings 10000000000); set context_length"
    )


def test_missing_projector_is_a_clear_error(tmp_path):
    folder = build_listwise_checkpoint(tmp_path / "noproj", with_projector=False)
    with pytest.raises(UserError, match="lacks projector weights"):
        load_reranker(str(folder))


def test_missing_special_tokens_is_a_clear_error(tmp_path):
    tokens = [t for t in SPECIAL_TOKENS if t != "<|rerank_token|>"]
    folder = build_listwise_checkpoint(tmp_path / "notok", special_tokens=tokens)
    with pytest.raises(UserError, match=r"lacks the special token <\|rerank_token\|>"):
        load_reranker(str(folder))


def test_non_qwen3_config_is_refused(tmp_path):
    folder = build_listwise_checkpoint(tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="needs a qwen3 backbone"):
        load_reranker(str(folder))


# -- command line -----------------------------------------------------------------------------------


def test_score_command_prints_scores_in_input_order(checkpoint, tmp_path):
    plain = tmp_path / "docs.txt"
    plain.write_text("\n".join(DOCS[:4]) + "\n", encoding="utf-8")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d}) for d in DOCS[:4]) + "\n", encoding="utf-8")
    expected = reference_scores(checkpoint, QUERY, [d for d in DOCS[:4]])
    for path in (plain, jsonl):
        result = CliRunner().invoke(
            app, ["score", "--model", str(checkpoint), "--query", QUERY, "--docs", str(path)]
        )
        assert result.exit_code == 0, result.output
        assert np.abs(np.array(json.loads(result.stdout)) - expected).max() <= 1e-5
    plain.write_text(DOCS[0] + "\n", encoding="utf-8")
    one = CliRunner().invoke(
        app, ["score", "--model", str(checkpoint), "--query", QUERY, "--docs", str(plain)]
    )
    assert "scoring 1 document " in one.stderr and "documents" not in one.stderr


def test_documents_file_lines_are_split_at_line_feeds_only(tmp_path):
    from rerank_eval.cli.tools import read_documents_file

    plain = tmp_path / "docs.txt"
    plain.write_text("first\r\n\nform\x0cfeed\nline\u2028separator\n", encoding="utf-8")
    assert read_documents_file(plain) == ["first", "", "form\x0cfeed", "line\u2028separator"]
    starts_like_json = tmp_path / "braces.txt"
    starts_like_json.write_text('{"text": "not parsed"}\nplain\n', encoding="utf-8")
    assert read_documents_file(starts_like_json) == ['{"text": "not parsed"}', "plain"]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "a\u2028b"}\n\n{"text": ""}\n', encoding="utf-8")
    assert read_documents_file(jsonl) == ["a\u2028b", ""]


def test_score_command_rejects_bad_jsonl(checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["score", "--model", str(checkpoint), "--query", "q", "--docs", str(bad)]
    )
    assert result.exit_code == 2
    assert f"{bad}, line 2: expected an object with a text field" in result.output


def test_beir_with_checkpoint_directory_end_to_end(checkpoint, tmp_path):
    runs = tmp_path / "runs"
    builders.write_run(runs / "scifact.trec", builders.SCIFACT_RUN)
    builders.write_run(runs / "fiqa.trec", builders.FIQA_RUN)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "beir",
            "--model",
            str(checkpoint),
            "--datasets",
            "scifact,fiqa",
            "--runs-dir",
            str(runs),
            "--out",
            str(out),
            "--candidate-order",
            "reversed",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["content_sha256"] == folder_sha256(checkpoint)
    assert manifest["model"]["family"] == "listwise-last-token"
    assert manifest["protocol"]["candidate_order"] == "reversed"
    # The written order is the reference scores' order for the reversed candidate list.
    texts = {d: f"{t} {x}" for d, (t, x) in builders.SCIFACT_DOCS.items()}
    first_stage = ["s2", "s3", "s1", "s5", "s6"]  # trec order of query 1
    shown = first_stage[::-1]
    scores = reference_scores(checkpoint, builders.SCIFACT_QUERIES["1"], [texts[d] for d in shown])
    expected_order = [shown[i] for i in np.argsort(-scores, kind="stable")]
    written = [
        line.split()[2]
        for line in (out / "runs" / "scifact.trec").read_text().splitlines()
        if line.startswith("1 ")
    ]
    assert written == expected_order


def test_each_querys_block_split_is_reported_as_the_model_saw_it(checkpoint, tmp_path, monkeypatch):
    """per_query_blocks.csv: the number and sizes of each query's blocks, equal to the passages in
    the prompts built for it alone; a short context splits documents of varying lengths unevenly."""
    import pandas as pd

    from tests import builders
    from tests.expected import trec_ranking

    docs, queries, _, run = builders.synthetic_nq()
    run_file = builders.write_run(tmp_path / "nq.trec", run)
    settings = {"context_length": 700, "max_doc_length": 48, "max_query_length": 16}
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "beir", "--datasets", "nq", "--model", str(checkpoint), "--run", f"nq={run_file}",
        "--out", str(tmp_path / "out"), *(f for k, v in settings.items() for f in ("--set", f"{k}={v}")),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    reported = pd.read_csv(tmp_path / "out" / "per_query_blocks.csv", dtype=str).set_index("query_id")
    reranker = load_reranker(str(checkpoint), **settings)
    sizes = {}
    for query_id, query in queries.items():
        texts = [f"{docs[d][0]} {docs[d][1]}" for d in trec_ranking(run[query_id])]
        sizes[query_id] = [p.count('<passage id="') for p in reranker.block_prompts(query, texts)]
        assert reported.loc[query_id, "block_sizes"] == " ".join(map(str, sizes[query_id]))
        assert int(reported.loc[query_id, "blocks"]) == len(sizes[query_id])
    assert len({len(s) for s in sizes.values()}) > 1 or len({tuple(s) for s in sizes.values()}) > 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    counts = manifest["datasets"][0]["queries_by_block_count"]
    assert counts == {
        str(n): sum(len(s) == n for s in sizes.values()) for n in sorted({len(s) for s in sizes.values()})
    }


def test_packed_batches_count_the_row_rounded_up_to_pad_multiple(checkpoint):
    """A packed row is padded up to pad_multiple (`_packed`), so the budget must hold the rounded
    row: packed blocks may never make a forward pass of more than max_batch_tokens tokens."""
    packed = load_reranker(str(checkpoint), pack_blocks=True, pad_multiple=48, **PACKING_SETTINGS)
    blocks = packed._blocks(requests_for([QUERY, "vitamin d", "数据"]))
    grouped = 0
    for budget in range(96, 1201, 5):
        packed.settings = replace(packed.settings, max_batch_tokens=budget)
        for batch in packed._batches(blocks):
            if len(batch) > 1:
                grouped += 1
                assert rounded_up(sum(len(b.input_ids) for b in batch), 48) <= budget
    assert grouped  # some budgets do put several blocks in one row
