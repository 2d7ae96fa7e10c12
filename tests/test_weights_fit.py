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
