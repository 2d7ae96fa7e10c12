"""Every registered reranker family keeps the contract the pipeline relies on.

Parametrised over `registry.FAMILIES` itself, so a family added to the registry without a tiny
checkpoint here fails (`test_every_registered_family_is_checked`). For each: one score per text in
input order, empty input, scores that do not depend on which other queries share the batch (float
rounding at most), settings read from the family's dataclass, and a `describe()` that survives
JSON and describes the same scorer when the model is loaded again with the recorded settings.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from rerank_eval.errors import UserError
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.base import RerankRequest
from rerank_eval.rerankers.registry import FAMILIES
from tests.checkpoints import (
    build_bi_encoder,
    build_causal_lm,
    build_cross_encoder,
    build_listwise_checkpoint,
)

QUERIES = {
    "q1": ("aspirin and heart attacks", ["aspirin lowers the risk", "the fox jumps", "", "心脏 aspirin"]),
    "q2": ("vitamin d", ["bones need calcium and vitamin d", "short"]),
    "q3": ("quantum computing", ["qubits", "classical bits", "a long text " * 40]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(model, family) as load_reranker takes them, one per registered family."""
    root = tmp_path_factory.mktemp("conformance")
    causal = build_causal_lm(root / "lm")
    return {
        "listwise-last-token": (str(build_listwise_checkpoint(root / "listwise")), None),
        "cross-encoder": (str(build_cross_encoder(root / "ce")), None),
        "yes-no": (str(causal), "yes-no"),
        "one-zero": (str(causal), "one-zero"),
        "bi-encoder": (str(build_bi_encoder(root / "bi")), "bi-encoder"),
        "first-stage-order": ("bm25", None),
    }


def requests(ids: list[str]) -> list[RerankRequest]:
    made = []
    for query_id in ids:
        query, texts = QUERIES[query_id]
        made.append(
            RerankRequest(
                query_id=query_id,
                query=query,
                doc_ids=tuple(f"{query_id}-d{i}" for i in range(len(texts))),
                texts=tuple(texts),
                first_stage_ranks=tuple(range(len(texts))),
                first_stage_scores=tuple(float(len(texts) - i) for i in range(len(texts))),
            )
        )
    return made


def load(models, family: str, **settings):
    model, named_family = models[family]
    return load_reranker(model, device="cpu", dtype="float32", family=named_family, **settings)


def test_every_registered_family_is_checked(models):
    assert set(models) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_score_per_text_in_input_order_and_empty_input(models, family):
    reranker = load(models, family)
    assert reranker.family == family
    batch = requests(["q1", "q2", "q3"])
    scores = reranker.score_batch(batch)
    assert [len(s) for s in scores] == [len(r.texts) for r in batch]
    assert all(np.isfinite(s).all() for s in scores)
    assert reranker.score_batch([]) == []
    # input order: the same texts reversed give the same scores reversed
    (request,) = requests(["q1"])
    flipped = dataclasses.replace(
        request,
        doc_ids=request.doc_ids[::-1],
        texts=request.texts[::-1],
        first_stage_ranks=request.first_stage_ranks[::-1],
        first_stage_scores=request.first_stage_scores[::-1],
    )
    if family != "listwise-last-token":  # a listwise prompt is the candidates in order, by design
        (forward,), (backward,) = reranker.score_batch([request]), reranker.score_batch([flipped])
        np.testing.assert_allclose(backward, forward[::-1], atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scores_do_not_depend_on_the_other_queries_of_the_batch(models, family):
    reranker = load(models, family)
    together = reranker.score_batch(requests(["q1", "q2", "q3"]))
    alone = [reranker.score_batch(requests([q]))[0] for q in ("q1", "q2", "q3")]
    for joint, single in zip(together, alone):
        np.testing.assert_allclose(joint, single, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_settings_are_the_familys_dataclass(models, family):
    declared = FAMILIES[family].settings
    names = [field.name for field in dataclasses.fields(declared)]
    with pytest.raises(UserError, match=f"unknown setting 'no_such_setting' for family {family}"):
        load(models, family, no_such_setting=1)
    integers = [f.name for f in dataclasses.fields(declared) if "int" in str(f.type)]
    for name in integers:
        with pytest.raises(UserError, match=f"setting {name} of family {family} must be a positive integer"):
            load(models, family, **{name: 0})
        # a length or multiple past any context would only size an allocation that fills memory
        with pytest.raises(UserError, match=f"setting {name} of family {family} must be at most 16,777,216"):
            load(models, family, **{name: 10**9})
    recorded = load(models, family).describe().get("settings", {})
    assert set(recorded) <= set(names) | {"max_batch_tokens"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_describe_survives_json_and_reloading_with_its_settings_gives_the_same_scorer(models, family):
    reranker = load(models, family)
    described = reranker.describe()
    assert json.loads(json.dumps(described)) == described
    again = load(models, family, **described.get("settings", {}))

    # the same, except where a value came from: given now, where the tokenizer gave it before
    # (the score identity keeps that provenance, so existing journals keep their keys)
    def without_provenance(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.endswith("_from")}

    assert without_provenance(again.describe()) == without_provenance(described)
    assert without_provenance(again.score_identity()) == without_provenance(reranker.score_identity())


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "first-stage-order"])
def test_models_run_their_own_layers_not_kernels_fetched_from_the_hub(models, family):
    """transformers 5 swaps layers for Hub kernels at load time unless told not to: scores would
    depend on a download, and a machine without the `kernels` package could not load at all."""
    from transformers import PreTrainedModel

    reranker = load(models, family)
    held = [
        module
        for value in vars(reranker).values()
        if isinstance(value, torch.nn.Module)
        for module in value.modules()
        if isinstance(module, PreTrainedModel)
    ]
    assert held and all(module.use_kernels is False for module in held)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "first-stage-order"])
def test_a_token_id_beyond_the_models_embeddings_is_one_line(models, family):
    """A tokenizer of a larger vocabulary beside the weights (files of two models in one folder)
    ended in an IndexError inside the model (on a GPU, a device-side assert). Here the model's
    embeddings are said to be 5, so every text's ids go beyond them."""
    reranker = load(models, family)
    embeddings = next(
        value.get_input_embeddings()
        for value in vars(reranker).values()
        if isinstance(value, torch.nn.Module) and hasattr(value, "get_input_embeddings")
    )
    embeddings.num_embeddings = 5
    with pytest.raises(UserError) as refused:
        reranker.score_batch(requests(["q1"]))
    message = str(refused.value)
    assert message.startswith(f"model {reranker.checkpoint.source}: its tokenizer gave token id ")
    assert message.endswith("beyond the 5 token embeddings of the model: is the tokenizer of another model?")
