"""Rules of the listwise last-token reranker class that the listwise tests leave open (found by a
mutation round on rerankers/listwise/reranker.py): what describe() and the score identity record, a
query's notes outside the chunk scored, when the elementwise kernels are tried and what a failure
says, the packing refusal, the special tokens under tokenizers with an unknown token or a leading
token, and the bounded context-length message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rerank_eval.errors import UserError
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.listwise.procedure import SCORER_VERSION
from tests.checkpoints import build_listwise_checkpoint

BATCHING = ("max_batch_tokens", "pad_multiple", "pack_blocks")


@pytest.fixture(scope="module")
def listwise(tmp_path_factory) -> Path:
    return build_listwise_checkpoint(tmp_path_factory.mktemp("listwise-rules") / "listwise")


def request(query_id: str, docs: tuple[str, ...]) -> RerankRequest:
    return RerankRequest(
        query_id, "does aspirin help", tuple(map(str, range(len(docs)))), docs, tuple(range(len(docs)))
    )


def test_describe_records_the_checkpoint_settings_and_what_ran(listwise):
    """Every entry of the manifest's model description, each read from where it is decided: the
    family and scorer version, the checkpoint's identity, the resolved settings, the context
    length's source, device, dtype, attention, the norms switched to the fused kernel (two per
    layer, the q and k norms, the final one), and the float32 projector and scores."""
    from dataclasses import asdict

    import torch

    reranker = load_reranker(str(listwise), device="cpu", dtype="bfloat16")
    layers = reranker.backbone.config.num_hidden_layers
    assert reranker.describe() == {
        "family": "listwise-last-token",
        "scorer_version": SCORER_VERSION,
        "source": str(listwise),
        "revision": None,
        "content_sha256": reranker.checkpoint.content_sha256,
        "settings": asdict(reranker.settings),
        "context_length_from": "tokenizer.model_max_length",
        "device": "cpu",
        "dtype": "bfloat16",
        "attention": reranker.backbone.config._attn_implementation,
        "fused_rms_norms": 4 * layers + 1,
        "projector_dtype": "float32",
        "score_dtype": "float32",
    }
    assert reranker.dtype == torch.bfloat16


def test_the_score_identity_is_the_description_less_folder_device_index_and_batching(listwise):
    """The journal's model identity: describe() without the folder's path (its content hash names
    the weights), with the device's type only (here a CPU given an index) and on a CPU its thread
    count, and without the three batching settings; a checkpoint named by hub id and commit (no
    content hash) keeps its id."""
    import torch

    reranker = load_reranker(str(listwise))
    reranker.device = torch.device("cpu", 0)
    described = reranker.describe()
    assert described["device"] == "cpu:0"
    identity = reranker.score_identity()
    unchanged = {k: v for k, v in described.items() if k not in ("source", "device", "settings")}
    assert identity == {
        **unchanged,
        "device": "cpu",
        "cpu_threads": torch.get_num_threads(),
        "settings": {k: v for k, v in described["settings"].items() if k not in BATCHING},
    }
    reranker.checkpoint = dataclasses.replace(reranker.checkpoint, revision="0" * 40, content_sha256=None)
    assert reranker.score_identity()["source"] == str(listwise)


def test_notes_of_a_query_outside_the_chunk_just_scored_are_empty(listwise):
    """The block split is reported for the queries of the last chunk only: a query that was not in
    it gets no notes (not a `blocks` entry of None)."""
    reranker = load_reranker(str(listwise))
    scored, other = request("q1", ("aspirin", "the quick brown fox")), request("q2", ("vitamin d",))
    reranker.score_batch([scored])
    assert reranker.notes(scored) == {"blocks": [2]}
    assert reranker.notes(other) == {}


def watch_kernel_trial(monkeypatch, failure: str | None) -> list[tuple]:
    """The elementwise kernels' trial, recorded instead of run (answering `failure`), and the CPU
    default turned to compiling."""
    from rerank_eval.rerankers.listwise import reranker as listwise_module

    calls: list[tuple] = []

    def trial(*args):
        calls.append(args)
        return failure

    monkeypatch.setattr(listwise_module, "compile_by_default", lambda device: True)
    monkeypatch.setattr(listwise_module, "compile_failure", trial)
    return calls


def test_no_kernel_trial_when_the_elementwise_setting_is_off(listwise, monkeypatch, capsys):
    """compile_elementwise=false tries nothing (a trial would cost a compilation at every load) and
    says nothing, even where the trial would fail."""
    calls = watch_kernel_trial(monkeypatch, "InductorError: no C compiler")
    reranker = load_reranker(str(listwise), compile_elementwise=False)
    assert calls == [] and capsys.readouterr().err == ""
    assert reranker.settings.compile_elementwise is False


def test_the_kernel_trial_runs_on_the_rerankers_own_backbone_device_and_dtype(listwise, monkeypatch):
    """The trial builds the kernels scoring will run: with the loaded backbone, on its device, in its
    dtype (a bfloat16 reranker's kernels are not float32 ones); where it succeeds, by default or
    asked for, the modules are switched to the compiled ones."""
    import torch

    calls = watch_kernel_trial(monkeypatch, None)
    reranker = load_reranker(str(listwise), dtype="bfloat16")
    assert reranker.settings.compile_elementwise is True
    assert len(calls) == 1
    backbone, device, dtype = calls[0]
    assert backbone is reranker.backbone and device == torch.device("cpu") and dtype == torch.bfloat16
    asked = load_reranker(str(listwise), compile_elementwise=True)  # asked for, and possible
    for model in (reranker, asked):
        assert model.settings.compile_elementwise is True
        assert {type(layer.mlp).__name__ for layer in model.backbone.layers} == {"CompiledQwen3MLP"}


def test_kernels_asked_for_and_impossible_name_the_setting_in_words(listwise, monkeypatch):
    """The one-line error names the setting as the library spells it (no unrendered marker)."""
    watch_kernel_trial(monkeypatch, "InductorError: no C compiler")
    with pytest.raises(UserError) as refused:
        load_reranker(str(listwise), compile_elementwise=True)
    assert str(refused.value) == (
        "compile_elementwise: torch.compile cannot build kernels on cpu (InductorError: no C compiler); "
        "run with the setting compile_elementwise=false"
    )


def test_packing_refused_says_why_and_what_to_do_in_full(listwise, monkeypatch):
    from rerank_eval.rerankers.listwise import reranker as listwise_module
    from rerank_eval.rerankers.listwise.qwen3_kernels import register_repeated_kv_attention

    monkeypatch.setattr(
        listwise_module, "listwise_attention", lambda device, dtype: register_repeated_kv_attention()
    )
    with pytest.raises(UserError) as refused:
        load_reranker(str(listwise), pack_blocks=True)
    assert str(refused.value) == (
        "pack_blocks needs FlashAttention or SDPA with a mask; float32 on CUDA runs an attention "
        "without masks: use bfloat16, or leave pack_blocks unset"
    )


def test_a_special_token_a_tokenizer_knows_only_as_unknown_is_refused(listwise):
    """A tokenizer with an unknown token maps a missing special token to it, and tokenizes the text
    as that one token: the token is still missing."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "aspirin": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    reranker = load_reranker(str(listwise))
    reranker.tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    assert reranker.tokenizer("<|embed_token|>", add_special_tokens=False)["input_ids"] == [0]
    with pytest.raises(UserError, match=r"^the tokenizer of .* lacks the special token <\|embed_token\|>$"):
        reranker._special_token_id("<|embed_token|>")


def test_special_tokens_are_found_under_a_tokenizer_that_adds_a_leading_token(listwise):
    """A tokenizer that puts a token in front of every text (as Llama's does) still holds the
    special tokens: the lookup tokenizes without the tokenizer's own additions."""
    from tokenizers import processors

    reranker = load_reranker(str(listwise))
    tokenizer = reranker.tokenizer
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", bos)]
    )
    assert tokenizer("x")["input_ids"][0] == bos  # the tokenizer does add it
    for token in ("<|embed_token|>", "<|rerank_token|>"):
        assert reranker._special_token_id(token) == tokenizer.get_vocab()[token]


def test_the_missing_context_length_message_is_one_bounded_line(listwise):
    """A config whose max_position_embeddings is no length and long (a 401-digit count, quoted in the
    message) gives a message cut at 300 characters."""
    reranker = load_reranker(str(listwise))
    reranker.tokenizer.model_max_length = int(1e30)  # transformers' sentinel for unset
    reranker.backbone.config.max_position_embeddings = 10**400
    with pytest.raises(UserError) as refused:
        reranker._context_length(None)
    start = f"checkpoint {listwise}: neither its tokenizer nor its config declares a context length "
    full = start + f"(max_position_embeddings {10**400!r}); set context_length"
    assert str(refused.value) == full[:300]


def test_notes_before_any_scoring_are_empty(listwise):
    reranker = load_reranker(str(listwise))
    assert reranker.notes(request("q1", ("aspirin",))) == {}


def test_a_pad_multiple_equal_to_the_context_length_is_allowed(listwise):
    """A row is never longer than the context, so rounding up to the context length itself is the
    largest multiple that makes sense; one more is refused (pinned in test_listwise)."""
    reranker = load_reranker(str(listwise), context_length=64, pad_multiple=64)
    assert reranker.settings.pad_multiple == reranker.settings.context_length == 64


def test_a_reranker_from_parts_in_memory_is_the_loaded_one(listwise):
    """from_parts (the benchmarks' randomly initialised models) casts the backbone to the dtype
    asked for as loading does (the rotary frequencies stay float32: rounded, they would move every
    position's angle), keeps the checkpoint and the settings given, and scores as the loaded
    reranker, to the bit."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, Qwen3Model

    from rerank_eval.models.checkpoint import Checkpoint
    from rerank_eval.rerankers.listwise.model import load_projector_weights
    from rerank_eval.rerankers.listwise.reranker import ListwiseLastToken
    from rerank_eval.rerankers.settings import ListwiseSettings

    loaded = load_reranker(str(listwise), dtype="bfloat16", context_length=512)
    checkpoint: Checkpoint = loaded.checkpoint
    built = ListwiseLastToken.from_parts(
        checkpoint,
        AutoTokenizer.from_pretrained(str(listwise)),
        Qwen3Model.from_pretrained(str(listwise), dtype=torch.float32),
        load_projector_weights(checkpoint),
        dtype="bfloat16",
        settings=ListwiseSettings(context_length=512),
    )
    assert built.dtype == torch.bfloat16
    assert {p.dtype for p in built.backbone.parameters()} == {torch.bfloat16}
    rotary = {n: b for n, b in built.backbone.named_buffers() if n.endswith("inv_freq")}
    assert rotary and {b.dtype for b in rotary.values()} == {torch.float32}
    loaded_rotary = dict(loaded.backbone.named_buffers())
    assert all(torch.equal(b, loaded_rotary[n]) for n, b in rotary.items())
    assert built.checkpoint is checkpoint and built.settings == loaded.settings
    assert built.describe() == loaded.describe()
    docs = ("aspirin lowers the risk of heart attacks", "the quick brown fox", "vitamin d")
    for got, want in zip(built.score_batch([request("q", docs)]), loaded.score_batch([request("q", docs)])):
        np.testing.assert_array_equal(got, want)


def test_a_backbone_other_than_qwen3_is_refused_naming_its_model_type(tmp_path):
    import json

    folder = build_listwise_checkpoint(tmp_path / "llama")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(UserError) as refused:
        load_reranker(str(folder))
    assert str(refused.value) == (
        f"checkpoint {folder} has model_type 'llama'; the listwise last-token family needs a qwen3 backbone"
    )
