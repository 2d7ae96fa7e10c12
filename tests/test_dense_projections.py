"""Encoders whose sentence-transformers modules project the pooled vector (Dense: GTR, sentence-T5,
LaBSE), and a T5 backbone of which only the encoder embeds, against sentence-transformers itself:
the dense first stage's embeddings and the bi-encoder family's scores, on tiny random checkpoints
that sentence-transformers saved. In float32 on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.recipe import read_recipe
from rerank_eval.models.checkpoint import resolve_checkpoint
from tests import dense_checkpoints

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-5
PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "aspirin lowers the risk of heart attacks in adults " * 4,  # cut at the 16 tokens
    "Vitamin D and calcium keep bones strong",
    "数据检索与排序",
    "",
]
#: (pooling, normalize, the Dense modules' keyword arguments)
CASES = {
    # GTR: mean, one square projection without bias, Normalize
    "gtr": ("mean", True, [{"bias": False, "activation_function": torch.nn.Identity()}]),
    # LaBSE-like: CLS, tanh projection with bias, Normalize
    "tanh": ("cls", True, [{"activation_function": torch.nn.Tanh()}]),
    # two projections, the second narrowing with a projected residual; raw vectors (dot)
    "narrowing-residual": (
        "max",
        False,
        [
            {"bias": False, "activation_function": torch.nn.Identity()},
            {"out_features": 8, "activation_function": torch.nn.GELU(), "use_residual": True},
        ],
    ),
}


def _built(tmp_path: Path, case: str) -> Path:
    pooling, normalize, projections = CASES[case]
    folder = dense_checkpoints.build_t5_sentence_transformers(
        tmp_path / case, projections=projections, pooling=pooling, normalize=normalize, prompts=PROMPTS
    )
    if not normalize:  # no Normalize module and the dot product named: raw vectors
        settings = json.loads((folder / "config_sentence_transformers.json").read_text())
        settings["similarity_fn_name"] = "dot"
        (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    return folder


def _reference(folder: Path, texts: list[str], side: str) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    name = "query" if side == "query" else "document"
    return np.asarray(model.encode(texts, prompt_name=name, batch_size=2), dtype=np.float32)


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    """Within float32 error, relative to the vectors' size (raw, unnormalised ones run to hundreds)."""
    scale = max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(got - expected).max()) < TOLERANCE * scale


def _encoder(folder: Path, **overrides) -> DenseEncoder:
    checkpoint = resolve_checkpoint(str(folder))
    recipe = read_recipe(checkpoint.folder, checkpoint.source, overrides)
    return DenseEncoder(checkpoint, recipe, device="cpu", dtype="float32")


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("case", list(CASES))
def test_projected_t5_encoders_embed_and_score_as_sentence_transformers(tmp_path, case):
    from rerank_eval.rerankers import load_reranker

    folder = _built(tmp_path, case)
    widths = [options.get("out_features", 32) for options in CASES[case][2]]
    encoder = _encoder(folder)
    assert encoder.recipe.dense_layers == tuple(f"{2 + i}_Dense" for i in range(len(widths)))
    assert encoder.recipe.to_json()["dense_layers"] == list(encoder.recipe.dense_layers)
    expected = {side: _reference(folder, TEXTS, side) for side in ("query", "passage")}
    for side in ("query", "passage"):
        got = encoder.embed(TEXTS, side)
        assert got.shape == (len(TEXTS), widths[-1])
        _close(got, expected[side])
    # the projections really move the vectors: the encoder without them embeds otherwise
    unprojected = encoder.recipe.__class__(**{**encoder.recipe.__dict__, "dense_layers": ()})
    bare = DenseEncoder(resolve_checkpoint(str(folder)), unprojected, device="cpu", dtype="float32")
    if widths[-1] == 32:
        assert np.abs(bare.embed(TEXTS, "query") - expected["query"]).max(axis=1).min() > 1e-3
    # the bi-encoder family scores with the same vectors: cosine or dot, as the checkpoint says
    reranker = load_reranker(str(folder), device="cpu")
    assert reranker.family == "bi-encoder"
    query = "what do bones need"
    scores = np.array(reranker.score(query, TEXTS), dtype=np.float32)
    reference = expected["passage"] @ _reference(folder, [query], "query")[0]
    _close(scores, reference)
    assert reranker.describe()["embedding"]["dense_layers"] == list(encoder.recipe.dense_layers)
    assert "projected" in reranker.describe()["score_head"]


def test_a_cut_beyond_the_projected_width_is_refused(tmp_path):
    folder = _built(tmp_path, "narrowing-residual")
    assert _encoder(folder, dimensions=8).recipe.dimensions == 8
    with pytest.raises(UserError) as excinfo:
        _encoder(folder, dimensions=9)
    assert _one_line(excinfo).endswith("dimensions 9 is more than its vectors' 8")


def _edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def _swap_modules(folder: Path, first: int) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    modules[first], modules[first + 1] = modules[first + 1], modules[first]
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", activation_function="torch.nn.Softmax"),
            "activation 'torch.nn.Softmax' is not supported (rerank-eval runs torch's Identity, Tanh, "
            "ReLU, GELU, Sigmoid, SiLU)",
        ),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", activation_function="mine.Act"),
            "activation 'mine.Act' is not supported",
        ),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", module_input_name="token_embeddings"),
            "module_input_name 'token_embeddings' is not supported",
        ),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", in_features=16, out_features=16),
            "Dense module 2_Dense takes vectors of 16 but is given 32",
        ),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", out_features="32"),
            "in_features and out_features must be positive integers",
        ),
        (lambda f: _swap_modules(f, 2), "a Dense module after Normalize is not supported"),
        (lambda f: _swap_modules(f, 1), "a Dense module before Pooling is not supported"),
        (lambda f: (f / "2_Dense" / "config.json").write_text("{"), "is not valid JSON"),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", bias="false"),
            "bias must be true or false, not 'false'",
        ),
        (  # sentence-transformers cannot load a null activation either
            lambda f: _edit_json(f / "2_Dense" / "config.json", activation_function=None),
            "activation 'None' is not supported",
        ),
    ],
)
def test_a_dense_module_we_cannot_run_is_refused_when_the_recipe_is_read(tmp_path, damage, expected):
    folder = _built(tmp_path, "gtr")
    damage(folder)
    with pytest.raises(UserError) as excinfo:
        read_recipe(folder, str(folder), {})
    assert expected in _one_line(excinfo)


def _pickled_list(folder: Path) -> None:
    (folder / "2_Dense" / "model.safetensors").unlink()
    torch.save([1, 2, 3], str(folder / "2_Dense" / "pytorch_model.bin"))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda f: (f / "2_Dense" / "model.safetensors").unlink(),
            "Dense module 2_Dense has no model.safetensors or pytorch_model.bin",
        ),
        (
            lambda f: (f / "2_Dense" / "model.safetensors").write_bytes(b"\0" * 16),
            "cannot read the weights of Dense module",
        ),
        (
            lambda f: _edit_json(f / "2_Dense" / "config.json", bias=True),
            "the weights of Dense module 2_Dense do not fit its config",
        ),
        (_pickled_list, "the weights of Dense module"),
        (  # a layer of 10**9 × in_features floats was made before its weights were compared with it
            lambda f: _edit_json(f / "2_Dense" / "config.json", out_features=10**9),
            "the weights of Dense module 2_Dense do not fit its config: size mismatch for linear.weight",
        ),
    ],
)
def test_dense_weights_that_cannot_be_applied_are_one_line(tmp_path, damage, expected):
    from rerank_eval.rerankers import load_reranker

    folder = _built(tmp_path, "gtr")
    damage(folder)
    with pytest.raises(UserError) as excinfo:
        _encoder(folder)
    assert expected in _one_line(excinfo)
    with pytest.raises(UserError) as excinfo:  # the bi-encoder family reads them alike
        load_reranker(str(folder), device="cpu")
    assert expected in _one_line(excinfo)


def test_projections_that_do_not_fit_the_models_width_are_refused_by_the_bi_encoder_too(tmp_path):
    """Weights matching their own config but not the model (16 wide in, the model's 32 out): the
    reranker once loaded them and failed in its first forward pass, a traceback."""
    from rerank_eval.rerankers import load_reranker

    folder = _built(tmp_path, "gtr")
    _edit_json(folder / "2_Dense" / "config.json", in_features=16)
    (folder / "2_Dense" / "model.safetensors").unlink()
    torch.save({"linear.weight": torch.randn(32, 16)}, str(folder / "2_Dense" / "pytorch_model.bin"))
    with pytest.raises(UserError) as excinfo:
        load_reranker(str(folder), device="cpu")
    assert _one_line(excinfo).endswith("Dense module 2_Dense takes vectors of 16 but is given 32")


def test_older_dense_weights_in_pytorch_model_bin_load_as_safetensors_do(tmp_path):
    """sentence-transformers before 3 wrote a Dense module's weights as pytorch_model.bin."""
    from safetensors.torch import load_file

    folder = _built(tmp_path, "tanh")
    expected = _encoder(folder).embed(TEXTS, "passage")
    module = folder / "2_Dense"
    torch.save(load_file(str(module / "model.safetensors")), str(module / "pytorch_model.bin"))
    (module / "model.safetensors").unlink()
    assert np.array_equal(_encoder(folder).embed(TEXTS, "passage"), expected)
