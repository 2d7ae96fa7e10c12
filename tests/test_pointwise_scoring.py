"""The pointwise families' scoring paths on a tiny random cross-encoder: out-of-memory back-off and
its budget restored, how pairs are cut (only the document, else both longest first), token types,
tokenizer calls in groups, the tokenizer's limit under the position table, and the score identity
journal keys hold. Each test fails on a mutant a mutation round found surviving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rerank_eval.errors import UserError
from rerank_eval.pipeline.score import score_with_backoff
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from tests.checkpoints import build_cross_encoder
from tests.test_resilience import backed_off_to_the_same_scores

DOCS = (
    "scurvy is caused by a lack of vitamin c",
    "the lazy dog sleeps",
    "bones need calcium and vitamin d " * 6,
    "heart attacks and aspirin",
)


@pytest.fixture(scope="module")
def ce(tmp_path_factory):
    return build_cross_encoder(tmp_path_factory.mktemp("mut") / "ce")


def requests() -> list[RerankRequest]:
    queries = ["what causes scurvy", "vitamin d bones calcium", "aspirin"]
    return [
        RerankRequest(f"q{i}", q, tuple(map(str, range(len(DOCS)))), DOCS, tuple(range(len(DOCS))))
        for i, q in enumerate(queries)
    ]


def test_pointwise_out_of_memory_halves_the_budget_keeps_scores_and_restores(ce, monkeypatch):
    reranker = backed_off_to_the_same_scores(monkeypatch, ce, requests(), "model")
    stats = reranker.runtime_stats()
    retries = stats["out_of_memory_retries"]
    assert retries >= 1
    # halved once per retry, and recorded as used
    assert stats["max_batch_tokens"] == reranker.max_batch_tokens == 100_000 // 2**retries
    assert stats["largest_batch"] > 1  # the batches that failed were counted too
    reranker.restore_batch_budget()
    assert reranker.max_batch_tokens == 100_000


def test_pointwise_pair_too_large_even_alone_names_its_query_and_length(ce, monkeypatch):
    reranker = load_reranker(str(ce), max_length=64)

    def never(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(reranker.model, "forward", never)
    reqs = requests()
    owners = [r.query_id for r in reqs for _ in r.texts]
    encoded = reranker.encode_pairs(
        [r.query for r in reqs for _ in r.texts], [t for r in reqs for t in r.texts]
    )
    lengths = [len(e["input_ids"]) for e in encoded]
    longest = max(range(len(lengths)), key=lambda i: lengths[i])
    with pytest.raises(UserError) as raised:
        score_with_backoff(reranker, reqs)
    message = str(raised.value)
    assert message.startswith(
        f"query {owners[longest]}: one pair of {lengths[longest]:,} tokens does not fit in GPU memory "
        f"even alone (max_length 64, dtype float32)"
    ), message
    # halved until the longest pair was alone in its batch, and no further
    assert lengths[longest] <= reranker.max_batch_tokens < 2 * lengths[longest]


def test_shrink_refuses_a_batch_of_one_and_halves_a_larger_one(ce):
    reranker = load_reranker(str(ce), max_batch_tokens=1000)
    reranker._record_batch(1, 50, "q")
    assert reranker.shrink_batch_budget() is False and reranker.max_batch_tokens == 1000
    reranker._record_batch(2, 50, "q")
    assert reranker.shrink_batch_budget() is True and reranker.max_batch_tokens == 500


def test_the_tokenizers_smaller_limit_beats_the_position_table(ce, tmp_path, capsys):
    """model_max_length 20 under a 512-position table: pairs are cut at 20; asked for more, a
    warning says so; not asked, nothing is said."""
    folder = tmp_path / "ce20"
    import shutil

    shutil.copytree(ce, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["model_max_length"] = 20
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    reranker = load_reranker(str(folder))
    assert reranker.max_length == 20
    assert "warning" not in capsys.readouterr().err
    encoded = reranker.encode_pairs(["what causes scurvy"], [DOCS[2]])
    assert len(encoded[0]["input_ids"]) == 20
    asked = load_reranker(str(folder), max_length=64)
    assert asked.max_length == 20
    assert "max_length 64 is more than" in capsys.readouterr().err


def test_a_long_query_within_max_length_cuts_only_the_document(ce):
    """A query of more than half of max_length (but less than all of it) keeps every token: only the
    document is cut (truncation only_second), as the reference cross-encoder encodes pairs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ce))
    query = "scurvy vitamin c lack calcium bones heart aspirin dog"
    reranker = load_reranker(str(ce), max_length=16)

    def alone(*args):  # the batched encoding serves every pair that needs no longest-first cut
        raise AssertionError("a pair was encoded alone")

    reranker._encode_one = alone
    assert 8 < len(tokenizer(query, add_special_tokens=False)["input_ids"]) < 13
    got = reranker.encode_pairs([query, query], [DOCS[2], DOCS[0]])
    want = tokenizer([query, query], [DOCS[2], DOCS[0]], truncation="only_second", max_length=16)
    assert [g["input_ids"] for g in got] == want["input_ids"]
    assert "pairs_truncated_longest_first" not in reranker.runtime_stats()


def test_a_tokenizer_with_token_types_scores_with_them(ce, tmp_path):
    """A BERT cross-encoder's tokenizer gives token types (0 for the query, 1 for the document); the
    model reads them (the tiny test tokenizer gives none unless its config names them)."""
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "typed"
    shutil.copytree(ce, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="eager")
    torch.manual_seed(3)
    with torch.no_grad():  # token types that move the score well past float rounding
        model.bert.embeddings.token_type_embeddings.weight.normal_(0, 1)
        model.classifier.weight.normal_(0, 1)
    model.save_pretrained(str(folder))
    model.eval()
    query = "what causes scurvy"
    expected, untyped = [], []
    for doc in DOCS:
        inputs = tokenizer(query, doc, truncation="only_second", max_length=16, return_tensors="pt")
        assert inputs["token_type_ids"].sum() > 0
        with torch.no_grad():
            expected.append(float(model(**inputs).logits[0, 0]))
            inputs.pop("token_type_ids")
            untyped.append(float(model(**inputs).logits[0, 0]))
    assert np.abs(np.array(expected) - untyped).min() > 1e-3  # the types tell (100× the 1e-5 below)
    for budget in (100_000, 1):  # padded batches and pairs alone
        reranker = load_reranker(str(folder), max_length=16, max_batch_tokens=budget)
        rows = reranker.encode_pairs([query] * len(DOCS), list(DOCS))
        assert all("token_type_ids" in row for row in rows)
        assert np.abs(np.array(reranker.score(query, list(DOCS))) - expected).max() <= 1e-5


def test_a_query_longer_than_max_length_is_cut_with_its_document_longest_first(ce):
    """The fallback for a query that alone exceeds max_length: the pair, both sides cut longest
    first to exactly max_length (not the query alone, not uncut)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ce))
    query = "scurvy vitamin c lack calcium bones heart aspirin dog"
    reranker = load_reranker(str(ce), max_length=6)
    got = reranker.encode_pairs([query, query], [DOCS[0], DOCS[2]])
    want = tokenizer([query, query], [DOCS[0], DOCS[2]], truncation="longest_first", max_length=6)
    assert [g["input_ids"] for g in got] == want["input_ids"]
    assert all(len(g["input_ids"]) == 6 and g["input_ids"].count(tokenizer.sep_token_id) == 2 for g in got)
    assert reranker.runtime_stats()["pairs_truncated_longest_first"] == 2


def test_only_the_pair_whose_query_exceeds_max_length_is_cut_longest_first(ce):
    """One such pair makes its group be encoded pair by pair: the others keep their query whole
    (only_second), and only that one is counted as cut longest first."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ce))
    long_query = "scurvy vitamin c lack calcium bones heart aspirin dog"  # 10 tokens
    medium = "scurvy vitamin c lack calcium bones"  # more than half of 10 tokens
    reranker = load_reranker(str(ce), max_length=10)
    got = reranker.encode_pairs([long_query, medium], [DOCS[2], DOCS[2]])
    assert (
        got[1]["input_ids"]
        == tokenizer(medium, DOCS[2], truncation="only_second", max_length=10)["input_ids"]
    )
    assert (
        got[1]["input_ids"]
        != tokenizer(medium, DOCS[2], truncation="longest_first", max_length=10)["input_ids"]
    )
    assert reranker.runtime_stats()["pairs_truncated_longest_first"] == 1


def test_pairs_tokenized_in_several_groups_keep_every_pair_in_order(ce, monkeypatch):
    """Texts past the tokenizer call's character budget are tokenized a group at a time: every
    group's rows are kept, in input order."""
    from rerank_eval.models import common

    monkeypatch.setattr(common, "TOKENIZER_CALL_CHARACTERS", 60)
    reranker = load_reranker(str(ce), max_length=16)
    queries = ["what causes scurvy"] * len(DOCS)
    grouped = reranker.encode_pairs(queries, list(DOCS))
    monkeypatch.setattr(common, "TOKENIZER_CALL_CHARACTERS", 10**9)
    assert len(common.character_groups([len(q) + len(d) for q, d in zip(queries, DOCS)], 60)) > 1
    assert grouped == reranker.encode_pairs(queries, list(DOCS))


def test_the_score_identity_names_the_device_type_and_the_source_only_where_the_key_does(ce):
    """Journal keys: scores from another device type never mix with these (float rounding
    differs); a checkpoint's source is in the identity exactly when its key identity holds it."""
    reranker = load_reranker(str(ce), device="cpu")
    identity = reranker.score_identity()
    assert identity["device"] == "cpu"
    assert ("source" in identity) == ("source" in reranker.checkpoint.key_identity())
    assert identity["settings"] == {"max_length": reranker.max_length}
