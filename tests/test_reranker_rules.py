"""Rules of the causal-LM (yes-no, one-zero) and listwise last-token rerankers that the family tests
left unpinned (found by mutation testing): an output layer with a bias, tokens a tokenizer lacks,
and the out-of-memory budget's bookkeeping.

Expected values are computed independently: full-vocabulary forward passes for scores, counts
written out by hand for statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_eval.errors import UserError
from rerank_eval.pipeline.score import score_with_backoff
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.causal_lm import TwoTokenReranker
from tests.checkpoints import build_causal_lm, build_listwise_checkpoint, build_wordpiece_tokenizer

QUERY = "what causes scurvy"
DOCS = ["scurvy is caused by a lack of vitamin c", "the lazy dog sleeps", "heart attacks and aspirin"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> Path:
    return build_causal_lm(tmp_path_factory.mktemp("rules") / "lm")


def on_load(monkeypatch, change) -> None:
    """Causal LMs loaded from now on pass through `change(tokenizer, model)` first."""
    original = TwoTokenReranker._load

    def load(self):
        tokenizer, model = original(self)
        change(tokenizer, model)
        return tokenizer, model

    monkeypatch.setattr(TwoTokenReranker, "_load", load)


def with_biased_head(monkeypatch, bias_seed: int = 3) -> None:
    """Loaded causal LMs get an output layer with a bias (as GPT-J's has), the same bias each time."""

    def biased(tokenizer, model) -> None:
        head = model.get_output_embeddings()
        layer = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            layer.weight.copy_(head.weight)
            generator = torch.Generator().manual_seed(bias_seed)
            layer.bias.copy_(torch.randn(head.out_features, generator=generator))
        model.set_output_embeddings(layer)

    on_load(monkeypatch, biased)


def full_logits(reranker, ids: list[int]) -> torch.Tensor:
    """The last position's full-vocabulary logits, through the model's own output layer."""
    with torch.no_grad():
        return reranker.model(input_ids=torch.tensor([ids])).logits[0, -1].float()


@pytest.mark.parametrize("family", ["yes-no", "one-zero"])
def test_an_output_layer_bias_enters_the_two_token_logits(lm, monkeypatch, family):
    """A causal LM whose output layer has a bias: each of the two rows' logits includes its own
    bias entry, exactly as the full forward pass computes them (the reranker projects onto two rows
    and must add the same two bias entries, not the whole vector nor none)."""
    with_biased_head(monkeypatch)
    reranker = load_reranker(str(lm), family=family)
    assert reranker.head_bias is not None and reranker.head_bias.shape == (2,)
    negative, positive = (reranker.tokenizer.convert_tokens_to_ids(t) for t in reranker.tokens)
    expected = []
    for row in reranker.encode_pairs([QUERY] * len(DOCS), DOCS):
        logits = full_logits(reranker, row["input_ids"])
        pair = torch.stack([logits[negative], logits[positive]])
        expected.append(
            float(torch.softmax(pair, dim=0)[1]) if family == "yes-no" else float(pair[1] - pair[0])
        )
    got = np.array(reranker.score(QUERY, DOCS))
    assert np.abs(got - np.array(expected)).max() <= 1e-5


def test_a_token_the_tokenizer_lacks_is_a_one_line_error(lm, tmp_path):
    """The two answer tokens must be single tokens of the vocabulary: one missing (a tokenizer
    without an unknown token answers None; one with an unknown token answers its id) is refused in
    one line naming the token, not a TypeError nor a score read off the unknown token's row."""
    reranker = load_reranker(str(lm), family="yes-no")
    with pytest.raises(UserError, match=r"^the tokenizer of .* has no token 'absent-token'$"):
        reranker._token_id("absent-token")
    reranker.tokenizer = build_wordpiece_tokenizer(tmp_path / "wordpiece")
    assert reranker.tokenizer.unk_token_id is not None
    with pytest.raises(UserError, match=r"^the tokenizer of .* has no token 'absent-token'$"):
        reranker._token_id("absent-token")


# -- listwise last-token: the out-of-memory budget --------------------------------------------------


@pytest.fixture(scope="module")
def listwise(tmp_path_factory) -> Path:
    return build_listwise_checkpoint(tmp_path_factory.mktemp("rules") / "listwise")


def listwise_requests() -> list[RerankRequest]:
    docs = tuple(f"passage number {i} about aspirin and the heart" for i in range(6))
    return [
        RerankRequest(f"q{i}", f"query {i}", tuple(map(str, range(6))), docs, tuple(range(6)))
        for i in range(4)
    ]


def test_listwise_out_of_memory_halves_the_budget_counts_each_retry_and_restores(listwise, monkeypatch):
    """Only one block fits: the budget is halved once per retry (100,000 → 100,000 / 2^retries, the
    value the manifest's statistics record), the journal's batching key keeps the configured
    budget while shrunk, and restoring brings the configured budget back."""
    reference = load_reranker(str(listwise), max_batch_tokens=1).score_batch(listwise_requests())
    reranker = load_reranker(str(listwise), max_batch_tokens=100_000)
    forward = reranker.backbone.forward
    retries = []

    def one_row(input_ids=None, **kwargs):
        if input_ids.shape[0] > 1:
            retries.append(input_ids.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(reranker.backbone, "forward", one_row)
    for got, want in zip(score_with_backoff(reranker, listwise_requests()), reference, strict=True):
        assert np.abs(got - want).max() <= 1e-5
    stats = reranker.runtime_stats()
    assert len(retries) >= 1 and stats["out_of_memory_retries"] == len(retries)
    assert stats["max_batch_tokens"] == reranker.settings.max_batch_tokens == 100_000 // 2 ** len(retries)
    assert type(stats["max_batch_tokens"]) is int  # a token count, recorded as one
    assert reranker.batching()["max_batch_tokens"] == 100_000  # the key does not move with a shrink
    reranker.restore_batch_budget()
    assert reranker.settings.max_batch_tokens == 100_000
    assert reranker.describe()["settings"]["max_batch_tokens"] == 100_000


def test_listwise_shrink_refuses_a_batch_of_one_block(listwise):
    """A batch that held a single block cannot shrink (the caller reports the block as too large);
    one of two blocks halves the budget."""
    reranker = load_reranker(str(listwise), max_batch_tokens=1000)
    reranker._last_batch_blocks = 1
    assert reranker.shrink_batch_budget() is False
    assert (
        reranker.settings.max_batch_tokens == 1000 and reranker.runtime_stats()["out_of_memory_retries"] == 0
    )
    reranker._last_batch_blocks = 2
    assert reranker.shrink_batch_budget() is True
    assert (
        reranker.settings.max_batch_tokens == 500 and reranker.runtime_stats()["out_of_memory_retries"] == 1
    )


def test_listwise_out_of_memory_as_the_first_batch_moves_to_the_device_is_told_of_that_batch(listwise):
    """The bookkeeping an out-of-memory error is judged by is written before the inputs go to the
    device: a first batch of several blocks refused there shrinks the budget (it was taken for a
    batch of none), and a lone block refused there is named with its query and its tokens."""
    reference = load_reranker(str(listwise), max_batch_tokens=1).score_batch(listwise_requests())
    reranker = load_reranker(str(listwise), max_batch_tokens=100_000)
    padded = reranker._padded

    def one_block_fits(batch, markers):
        if len(batch) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return padded(batch, markers)

    reranker._padded = one_block_fits
    for got, want in zip(score_with_backoff(reranker, listwise_requests()), reference, strict=True):
        assert np.abs(got - want).max() <= 1e-5
    assert reranker.runtime_stats()["out_of_memory_retries"] >= 1

    lone = load_reranker(str(listwise), max_batch_tokens=1)

    def nothing_fits(batch, markers):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    lone._padded = nothing_fits
    requests = listwise_requests()[:1]
    with pytest.raises(UserError) as refused:
        score_with_backoff(lone, requests)
    (block,) = lone.prepare(requests)[1][:1]
    assert str(refused.value).startswith(
        f"query q0: one block of {len(block.input_ids):,} tokens does not fit in GPU memory even alone"
    )


def test_a_datasets_instruction_by_model_name_beats_the_familys_and_none_falls_back(lm):
    """The yes-no prompt's instruction for a dataset: the one given under the model's own name, else
    the family's, else the default; a dataset without one does not inherit the previous dataset's
    (each dataset's prompt, and so its scores and manifest, depend on its own config only)."""
    from rerank_eval.rerankers.base import DatasetContext
    from rerank_eval.rerankers.causal_lm import QWEN3_DEFAULT_INSTRUCTION

    reranker = load_reranker(str(lm), family="yes-no")
    reranker.begin_dataset(DatasetContext("a", {str(lm): "by name", "yes-no": "by family"}))
    assert reranker.settings()["instruction"] == "by name"
    reranker.begin_dataset(DatasetContext("b", {"other-model": "not mine", "yes-no": "by family"}))
    assert reranker.settings()["instruction"] == "by family"
    reranker.begin_dataset(DatasetContext("c", {}))
    assert reranker.settings()["instruction"] == QWEN3_DEFAULT_INSTRUCTION
    body = reranker.tokenizer.decode(reranker.encode_pairs([QUERY], [DOCS[0]])[0]["input_ids"])
    assert f"<Instruct>: {QWEN3_DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>: {DOCS[0]}" in body


def test_a_one_zero_query_longer_than_three_quarters_of_max_length_is_cut_there(lm):
    """mxbai's reference cuts the query to max_length * 3 // 4 tokens (here 48 of 64) before the
    document gets what is left: a long query keeps exactly its first 48 tokens, followed by the
    separator."""
    reranker = load_reranker(str(lm), family="one-zero", max_length=64)
    tokenizer = reranker.tokenizer

    def enc(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    query = "what causes scurvy and why " * 12
    assert len(enc(f"query: {query}")) > 64
    prefix = enc(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\n"
    )
    for row in reranker.encode_pairs([query], [DOCS[0]]):
        ids = row["input_ids"]
        assert ids[: len(prefix)] == prefix
        assert ids[len(prefix) : len(prefix) + 48] == enc(f"query: {query}")[:48]
        assert ids[len(prefix) + 48 : len(prefix) + 48 + len(enc("\n"))] == enc("\n")


def with_a_bos_adding_tokenizer(monkeypatch) -> None:
    """Loaded causal LMs get a tokenizer that adds a leading token to every text (as Llama's does)."""
    from tokenizers import processors

    def adding(tokenizer, model) -> None:
        bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", pair="<|endoftext|> $A $B", special_tokens=[("<|endoftext|>", bos)]
        )

    on_load(monkeypatch, adding)


@pytest.mark.parametrize("family", ["yes-no", "one-zero"])
def test_the_prompt_holds_no_special_tokens_a_tokenizer_would_add(lm, monkeypatch, family):
    """The templates are assembled from pieces tokenized without the tokenizer's own special tokens
    (as the references do): a tokenizer that adds a leading token to each text must not put one
    in front of every piece and every query and document."""
    with_a_bos_adding_tokenizer(monkeypatch)
    reranker = load_reranker(str(lm), family=family)
    bos = reranker.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert reranker.tokenizer.encode("x")[0] == bos  # the tokenizer does add it
    for row in reranker.encode_pairs([QUERY] * len(DOCS), DOCS):
        assert bos not in row["input_ids"]


def test_an_explicit_context_length_is_used_and_recorded_as_the_settings(listwise):
    """context_length given as a setting wins over the tokenizer's 4096 and the manifest says where
    it came from (the other two sources are pinned in test_listwise)."""
    reranker = load_reranker(str(listwise), context_length=512)
    description = reranker.describe()
    assert description["settings"]["context_length"] == 512
    assert description["context_length_from"] == "setting"


def test_a_request_without_candidates_gets_an_empty_float32_array_beside_the_others(listwise):
    """A query with no candidates in a chunk scores as an empty float32 array in its place, and the
    others score exactly as they do alone."""
    docs = ("aspirin lowers the risk of heart attacks", "the quick brown fox")
    empty = RerankRequest("q0", "no candidates", (), (), ())
    full = RerankRequest("q1", "does aspirin help", ("a", "b"), docs, (0, 1))
    reranker = load_reranker(str(listwise))
    alone = reranker.score_batch([full])[0]
    got = reranker.score_batch([empty, full])
    assert got[0].shape == (0,) and got[0].dtype == np.float32
    assert got[1].dtype == np.float32 and np.abs(got[1] - alone).max() <= 1e-6
    assert reranker.notes(empty) == {"blocks": []} and reranker.notes(full) == {"blocks": [2]}


def test_a_special_token_must_tokenize_as_itself(listwise):
    """The embed and rerank tokens must be special: a vocabulary entry whose text the tokenizer
    splits into other tokens (here a byte-level word piece) would put the read position nowhere
    in the prompt, and is refused in one line."""
    reranker = load_reranker(str(listwise))
    vocabulary = reranker.tokenizer.get_vocab()
    piece = next(t for t in sorted(vocabulary) if t.startswith("Ġ") and len(t) > 2)
    assert reranker.tokenizer(piece, add_special_tokens=False)["input_ids"] != [vocabulary[piece]]
    with pytest.raises(UserError, match=rf"^the tokenizer of .* lacks the special token {piece}$"):
        reranker._special_token_id(piece)
    assert reranker._special_token_id("<|embed_token|>") == vocabulary["<|embed_token|>"]


def test_the_batching_key_names_how_blocks_are_grouped(listwise):
    """The journal key's batching part (packed and padded blocks differ in scores by float rounding
    only, so the score identity leaves them out and this part holds their journals apart) names
    the grouping that actually ran, beside the three batching settings."""
    padded = load_reranker(str(listwise), max_batch_tokens=1200)
    packed = load_reranker(str(listwise), max_batch_tokens=1200, pack_blocks=True, pad_multiple=1)
    assert padded.batching() == {
        "max_batch_tokens": 1200,
        "pad_multiple": padded.settings.pad_multiple,
        "pack_blocks": False,
        "order": "length-sorted token budget",
    }
    assert packed.batching() == {
        "max_batch_tokens": 1200,
        "pad_multiple": 1,
        "pack_blocks": True,
        "order": "blocks packed in order",
    }


def test_listwise_statistics_start_at_zero_and_count_every_forward_pass(listwise, monkeypatch):
    """The manifest's per-dataset statistics: zero for a dataset where nothing was scored (all of it
    resumed from the journal, say), then one forward pass per backbone call and the largest batch
    seen, counted here by watching the backbone."""
    from rerank_eval.rerankers.base import DatasetContext

    reranker = load_reranker(str(listwise), max_batch_tokens=100_000)
    reranker.begin_dataset(DatasetContext("empty"))
    assert reranker.runtime_stats() == {
        "max_batch_tokens": 100_000,
        "out_of_memory_retries": 0,
        "forward_passes": 0,
        "largest_batch_blocks": 0,
        "truncated_documents": 0,
    }
    forward = reranker.backbone.forward
    rows = []

    def watched(input_ids=None, **kwargs):
        rows.append(input_ids.shape[0])
        return forward(input_ids=input_ids, **kwargs)

    monkeypatch.setattr(reranker.backbone, "forward", watched)
    reranker.score_batch(listwise_requests())
    stats = reranker.runtime_stats()
    assert stats["forward_passes"] == len(rows) >= 1
    assert stats["largest_batch_blocks"] == max(rows)
