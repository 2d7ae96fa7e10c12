"""A config.json that does not fit its weights is refused before any model is built: declaring a
vocabulary of 10**9 or 10**5 layers once allocated them first (a traceback after gigabytes, or a
load that ran for hours). Each family that builds a transformers model (cross-encoder, bi-encoder,
causal LM, listwise, and the dense first stage's encoder) is checked, and the untouched checkpoint
still loads, so the check refuses nothing real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerank_eval.errors import UserError
from tests.checkpoints import (
    build_bi_encoder,
    build_causal_lm,
    build_cross_encoder,
    build_listwise_checkpoint,
)
from tests.dense_checkpoints import build_sentence_transformers

BUILDERS = {
    "cross-encoder": build_cross_encoder,
    "bi-encoder": build_bi_encoder,
    "causal": build_causal_lm,
    "listwise": build_listwise_checkpoint,
    "dense": lambda folder: build_sentence_transformers(folder, pooling="mean", normalize=True),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fit")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def load(kind: str, folder: Path) -> object:
    from rerank_eval.rerankers import load_reranker

    if kind == "dense":
        from rerank_eval.first_stage.dense.encoder import DenseEncoder
        from rerank_eval.first_stage.dense.recipe import read_recipe
        from rerank_eval.models.checkpoint import resolve_checkpoint

        checkpoint = resolve_checkpoint(str(folder))
        encoder = DenseEncoder(
            checkpoint, read_recipe(checkpoint.folder, checkpoint.source, {}), device="cpu"
        )
        return encoder.embed(["a text"], "passage")
    family = {"causal": "yes-no", "bi-encoder": "bi-encoder"}.get(kind)
    return load_reranker(str(folder), device="cpu", **({"family": family} if family else {}))


def edited(source: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    if "num_hidden_layers" in changes:  # (Qwen3's config must list as many layer types)
        config.pop("layer_types", None)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_a_config_declaring_sizes_its_weights_lack_is_one_line_before_any_allocation(built, kind, tmp_path):
    load(kind, built[kind])  # the real checkpoint loads
    vocabulary = edited(built[kind], tmp_path / "vocabulary", vocab_size=10**9)
    with pytest.raises(UserError) as refused:
        load(kind, vocabulary)
    message = str(refused.value)
    assert "\n" not in message and f"checkpoint {vocabulary}: config.json makes " in message
    assert "[1,000,000,000, " in message and "but its weights hold" in message
    layers = edited(built[kind], tmp_path / "layers", num_hidden_layers=10**5)
    with pytest.raises(
        UserError, match=r"config.json declares 100,000 layers, but its weights hold \d+ tensors"
    ):
        load(kind, layers)
    if kind in ("causal", "listwise"):  # transformers' own validation of Qwen3's config, in one line
        mismatched = edited(built[kind], tmp_path / "types", vocab_size=64)
        config = json.loads((mismatched / "config.json").read_text())
        config["layer_types"] = config["layer_types"][:1]
        (mismatched / "config.json").write_text(json.dumps(config))
        with pytest.raises(UserError, match=f"cannot read the config of {mismatched}: .*layer_types"):
            load(kind, mismatched)


@pytest.mark.parametrize("kind", ["cross-encoder", "dense", "listwise"])
def test_a_config_transformers_cannot_build_a_model_from_is_one_line(built, kind, tmp_path):
    """transformers and torch check sizes as they build (a padding token past the vocabulary): that
    was a traceback once the check built the model before loading it."""
    vocabulary = json.loads((built[kind] / "config.json").read_text())["vocab_size"]
    broken = edited(built[kind], tmp_path / "padding", pad_token_id=vocabulary + 5)
    with pytest.raises(UserError, match=f"checkpoint {broken}: config.json does not build a model: "):
        load(kind, broken)


def _tiny_bert(vocabulary: int):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=vocabulary, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    return BertModel(config)


@pytest.mark.parametrize("adapted", [False, True])
def test_token_ids_are_held_to_the_embeddings_also_under_an_adapter_and_with_padding(adapted):
    """An adapter on the word embeddings (merge_adapters false) wraps them in PEFT's layer, which
    has no num_embeddings of its own; the padding id a padded batch adds counts too."""
    from rerank_eval.models.weights_fit import check_token_ids_fit

    model = _tiny_bert(10)
    if adapted:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["word_embeddings"]))
        assert not hasattr(model.get_input_embeddings(), "num_embeddings")
    check_token_ids_fit([[0, 9], []], model, "model m", "a pair", pad=0)
    check_token_ids_fit([], model, "model m", "a pair")
    for rows, pad in (([[1, 10]], None), ([[1, 2]], 12)):
        with pytest.raises(UserError) as refused:
            check_token_ids_fit(rows, model, "model m", "a pair", pad)
        assert str(refused.value) == (
            f"model m: its tokenizer gave token id {max(rows[0] + [pad or 0])} in a pair, beyond the 10 "
            f"token embeddings of the model: is the tokenizer of another model?"
        )
