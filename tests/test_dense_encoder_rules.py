"""The dense encoder's rules that move vectors or cache keys without failing loudly: the
out-of-memory split (its halved budget, the lone text that fits nowhere, the one warning), each
side's cache identity, which prompt a side gets from sentence-transformers' files, and the prefix of
every background-tokenized chunk. (A mutation round on `first_stage/dense/encoder.py` and
`recipe.py` found each of these untested.) The forward pass is stubbed where only the batching is
under test: no model runs there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.recipe import EncoderRecipe, read_recipe
from rerank_eval.models.common import cpu_threads, token_budget_batches
from tests import dense_checkpoints
from tests.dense_checkpoints import NO_OVERRIDES, cpu_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = {"query": "search_query: ", "document": "search_document: "}


@pytest.fixture(scope="module")
def st_mean(tmp_path_factory) -> Path:
    return dense_checkpoints.build_sentence_transformers(
        tmp_path_factory.mktemp("gaps") / "st-mean", pooling="mean", normalize=True, prompts=PROMPTS
    )


# --- out of memory: the split ----------------------------------------------------------------------

# rows whose lengths pin the batching: budget 64 gives [[0], [1, 2], [3, 4, 5, 6], [7, ...]]
LENGTHS = [40, 20, 20, 10, 10, 10, 10, 4, 4, 4, 4, 4, 4, 4, 4]


def _rows(lengths: list[int]) -> list[list[int]]:
    return [[i + 1] * n for i, n in enumerate(lengths)]  # the first token names the row


def _stub_forward(encoder: DenseEncoder, fits, runs: list[list[int]], patience: int = 200):
    """`_forward` as a (len, first token) vector per row, out of memory where `fits(rows)` says so."""

    def forward(rows, side):
        if len(runs) > patience:
            raise RuntimeError("the split never ends")
        if not fits(rows):
            runs.append([])
            raise torch.OutOfMemoryError("simulated")
        runs.append([len(r) for r in rows])
        return torch.tensor([[float(len(r)), float(r[0])] for r in rows])

    encoder._forward = forward


def _padded(rows) -> int:
    return len(rows) * max(len(r) for r in rows)


def test_every_batch_over_the_memory_is_split_at_half_its_budget(st_mean, capsys):
    """Memory for 40 padded positions under a budget of 64: every batch over it (not only the first)
    is split into the batches a budget of 32 forms, and whatever is run comes back in input order."""
    encoder, runs = cpu_encoder(st_mean, max_batch_tokens=64), []
    _stub_forward(encoder, lambda rows: _padded(rows) <= 40, runs)
    rows = _rows(LENGTHS)
    got = encoder.queue_tokens(rows, "passage").result()
    np.testing.assert_array_equal(got, [[len(r), r[0]] for r in rows])
    over = [b for b in token_budget_batches(LENGTHS, 64) if len(b) * max(LENGTHS[i] for i in b) > 40]
    assert len(over) >= 2  # (so that a second split is exercised)
    assert encoder.stats["out_of_memory_retries"] == len(over)
    # each failing batch re-formed under half the configured budget, exactly as that budget forms it;
    # every other batch as without the failure (the order they run in decides nothing)
    expected = []
    for batch in token_budget_batches(LENGTHS, 64):
        if batch in over:
            parts = token_budget_batches([LENGTHS[i] for i in batch], 32)
            expected += [[], *[[LENGTHS[batch[i]] for i in part] for part in parts]]
        else:
            expected.append([LENGTHS[i] for i in batch])
    assert sorted(runs) == sorted(expected)
    # the warning is printed once, on stderr, naming the budget that ran out
    err = capsys.readouterr()
    assert err.out == ""
    assert err.err.count("out of GPU memory") == 1 and "a batch of 64 tokens" in err.err


def test_a_split_batch_that_runs_out_again_is_split_at_a_quarter(st_mean, capsys):
    """A part that still does not fit is split again under half of *its* budget (16), not the
    configured one: the halving goes on until the batch fits."""
    encoder, runs = cpu_encoder(st_mean, max_batch_tokens=64), []
    _stub_forward(encoder, lambda rows: _padded(rows) <= 16 or len(rows) == 1, runs)
    lengths = [8, 8, 8, 8, 8, 8, 8, 8]  # one batch of 64; halves of 32 (4 texts) still too big
    rows = _rows(lengths)
    got = encoder.queue_tokens(rows, "passage").result()
    np.testing.assert_array_equal(got, [[len(r), r[0]] for r in rows])
    assert [r for r in runs if r] == [[8, 8]] * 4  # quarters of 16 positions
    assert encoder.stats["out_of_memory_retries"] == 3  # the batch, then each half
    err = capsys.readouterr().err  # warned once, at the first failure
    assert err.count("out of GPU memory") == 1 and "a batch of 64 tokens" in err


def test_a_text_that_does_not_fit_even_alone_is_one_line(st_mean):
    """A lone text out of memory cannot be split: a UserError naming its length, not a loop."""
    encoder, runs = cpu_encoder(st_mean, max_batch_tokens=64), []
    _stub_forward(encoder, lambda rows: max(len(r) for r in rows) < 40, runs)
    with pytest.raises(UserError) as excinfo:
        encoder.queue_tokens(_rows(LENGTHS), "passage")
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith("one text of 40 tokens does not fit in GPU memory even alone")
    assert "lower the first stage's max_length" in message


def test_progress_hears_only_of_batches_that_ran(st_mean):
    """A batch that ran out is not counted as run: progress hears of each batch that ran, once
    (split batches cost less than the one they replace, so the shares may end below 1.0)."""
    encoder, runs, shares = cpu_encoder(st_mean, max_batch_tokens=64), [], []
    _stub_forward(encoder, lambda rows: _padded(rows) <= 40, runs)
    encoder.queue_tokens(_rows(LENGTHS), "passage", progress=shares.append)
    assert len(shares) == len([r for r in runs if r]) and shares == sorted(shares)
    assert shares[-1] <= 1.0 and len(set(shares)) == len(shares)


# --- the cache identity of each side ---------------------------------------------------------------

RECIPE = EncoderRecipe(
    pooling="mean", normalize=True, max_length=32, query_prefix="q: ", passage_prefix="p: ",
    adapters={"query": "retrieval_query", "passage": "retrieval_passage"},
)  # fmt: skip


def test_a_sides_identity_has_its_own_prefix_and_adapter_and_not_the_others():
    from dataclasses import replace

    assert RECIPE.side_identity("query")["prefix"] == "q: "
    assert RECIPE.side_identity("passage")["prefix"] == "p: "
    assert RECIPE.side_identity("query")["adapter"] == "retrieval_query"
    # the corpus cache (passage side) does not move when only the query side's settings do
    other_query = replace(RECIPE, query_prefix="Q: ", adapters={**RECIPE.adapters, "query": "other"})
    assert other_query.side_identity("passage") == RECIPE.side_identity("passage")
    other_passage = replace(RECIPE, passage_prefix="P: ", adapters={**RECIPE.adapters, "passage": "other"})
    assert other_passage.side_identity("query") == RECIPE.side_identity("query")


def test_the_encoder_identity_names_the_dtype_and_no_merge_without_an_adapter(st_mean):
    """Vectors of another dtype are other vectors (float32 and bfloat16 caches never mix); an
    encoder without adapters records no merge setting (keys of caches made before it hold)."""
    identity = cpu_encoder(st_mean).identity("passage")
    assert identity["dtype"] == "float32" and identity["device"] == "cpu"
    # a CPU's float32 sums are split by thread (a vector's last bits follow the count); not a GPU's
    assert identity["cpu_threads"] == torch.get_num_threads()
    assert cpu_threads(torch.device("cuda", 0)) == {}
    assert identity["merge_adapters"] is None
    assert cpu_encoder(st_mean, dtype="bfloat16").identity("passage")["dtype"] == "bfloat16"


# --- prompts as sentence-transformers picks them -------------------------------------------------


def _recipe(folder: Path) -> EncoderRecipe:
    return read_recipe(folder, str(folder), NO_OVERRIDES)


def test_the_passage_side_falls_back_to_the_default_prompt(tmp_path):
    """No `document`, `passage` or `corpus` prompt: the passage side gets the default prompt."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True,
        prompts={"query": "q: ", "classification": "k: "}, default_prompt_name="classification",
    )  # fmt: skip
    recipe = _recipe(folder)
    assert (recipe.query_prefix, recipe.passage_prefix) == ("q: ", "k: ")


def test_a_null_prompt_is_no_prefix(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, prompts={"query": "q: ", "document": "d: "}
    )
    path = folder / "config_sentence_transformers.json"
    settings = json.loads(path.read_text())
    settings["prompts"]["document"] = None
    path.write_text(json.dumps(settings))
    recipe = _recipe(folder)
    assert (recipe.query_prefix, recipe.passage_prefix) == ("q: ", "")


def test_a_checkpoint_without_a_prompts_file_is_cosine_without_prompts(tmp_path):
    """Older sentence-transformers checkpoints have no config_sentence_transformers.json: no
    prompts, and sentence-transformers' default similarity (cosine), so unit vectors."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="cls", normalize=False, prompts=PROMPTS
    )
    (folder / "config_sentence_transformers.json").unlink()
    recipe = _recipe(folder)
    assert (recipe.query_prefix, recipe.passage_prefix) == ("", "")
    assert recipe.normalize is True and recipe.pooling == "cls"


# --- embed: chunks and the empty input -------------------------------------------------------------

TEXTS = ["the quick brown fox", "aspirin", "vitamin d and calcium", "scurvy", "a b", "the quick brown fox"]


@pytest.mark.parametrize("side", ["query", "passage"])
def test_every_chunk_is_tokenized_with_its_sides_prefix(st_mean, monkeypatch, side):
    """The chunks after the first are tokenized in the background: with the side's prefix too (the
    query prompt differs from the passage one, so the other side's would move every vector)."""
    from rerank_eval.first_stage.dense import encoder as encoder_module

    straightforward = cpu_encoder(st_mean).embed_straightforward(TEXTS, side, batch_size=2)
    monkeypatch.setattr(encoder_module, "EMBED_CHUNK", 2)
    chunked = cpu_encoder(st_mean)
    got = chunked.embed(TEXTS, side)
    assert len(encoder_module.chunk_bounds(len(set(TEXTS)), chunked.first_chunk)) >= 3
    assert np.abs(got - straightforward).max() < 1e-5


def test_no_texts_give_an_empty_float32_matrix(st_mean):
    encoder = cpu_encoder(st_mean)
    for got in (encoder.embed([], "query"), encoder.embed_straightforward([], "query")):
        assert got.shape == (0, 0) and got.dtype == np.float32


# --- pooling and the Transformer module's settings -------------------------------------------------


def _pooling_config(folder: Path) -> Path:
    return next(p for p in folder.glob("*/config.json") if "Pooling" in p.parent.name)


def test_pooling_that_leaves_the_prompt_out_is_refused(tmp_path):
    """include_prompt: false pools without the prompt's tokens; pooling them would embed otherwise."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, prompts=PROMPTS
    )
    path = _pooling_config(folder)
    config = json.loads(path.read_text())
    config["include_prompt"] = False
    path.write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"include_prompt: false\) is not supported$"):
        _recipe(folder)


def test_a_pooling_config_that_chooses_none_says_so(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    path = _pooling_config(folder)
    config = {
        k: (False if k.startswith("pooling_mode_") else v) for k, v in json.loads(path.read_text()).items()
    }
    path.write_text(json.dumps(config))
    with pytest.raises(
        UserError, match=r"pooling none is not supported \(use one of mean, cls, lasttoken, max\)$"
    ):
        _recipe(folder)


def test_without_a_sentence_bert_config_the_length_is_the_models_and_case_is_kept(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, max_seq_length=12, do_lower_case=True
    )
    (folder / "sentence_bert_config.json").unlink()
    positions = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    recipe = _recipe(folder)
    assert recipe.max_length == positions and recipe.lowercase is False


def test_a_sentence_bert_config_without_do_lower_case_keeps_case(tmp_path):
    """Most sentence_bert_config.json files hold max_seq_length alone: no lower-casing then."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, max_seq_length=12, do_lower_case=True
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 12}))
    recipe = _recipe(folder)
    assert recipe.max_length == 12 and recipe.lowercase is False


def test_a_token_id_beyond_the_models_embeddings_is_one_line(st_mean):
    """A tokenizer of a larger vocabulary beside the weights (files of two models) gave an
    IndexError traceback inside the model; the ids within the embeddings still encode."""
    encoder = cpu_encoder(st_mean)
    embeddings = encoder.model("passage").get_input_embeddings().num_embeddings
    assert encoder._forward([[1, 2, embeddings - 1]], "passage").shape[0] == 1
    with pytest.raises(UserError) as refused:
        encoder._forward([[1, 2], [3, embeddings + 7, 4]], "passage")
    assert str(refused.value) == (
        f"encoder {encoder.checkpoint.source}: its tokenizer gave token id {embeddings + 7:,} in a "
        f"passage, beyond the {embeddings:,} token embeddings of the model: is the tokenizer of another "
        f"model?"
    )


PROMPTS_FILE, POOLING_FILE = "config_sentence_transformers.json", "1_Pooling/config.json"
MISREAD = [
    (PROMPTS_FILE, {"prompts": {"query": 5}}, "the query prompt must be a text, not 5"),
    (
        PROMPTS_FILE,
        {"prompts": {"classification": "k: ", "document": ["d: "]}},
        "the document prompt must be a text, not ['d: ']",
    ),
    (PROMPTS_FILE, {"prompts": ["q: "]}, "prompts must be an object of names and texts, not ['q: ']"),
    (PROMPTS_FILE, {"default_prompt_name": "nope"}, "default_prompt_name 'nope' names none of its prompts"),
    (
        POOLING_FILE,
        {"pooling_mode_mean_tokens": "yes"},
        "pooling_mode_mean_tokens must be true or false, not 'yes'",
    ),
    (
        POOLING_FILE,
        {"pooling_mode_cls_token": "false"},
        "pooling_mode_cls_token must be true or false, not 'false'",
    ),
    (
        "sentence_bert_config.json",
        {"do_lower_case": "false"},
        "do_lower_case must be true or false, not 'false'",
    ),
]


@pytest.mark.parametrize(("file", "change", "message"), MISREAD)
def test_settings_sentence_transformers_reads_otherwise_are_refused(tmp_path, file, change, message):
    """Values were read by truthiness or str(): the string "false" turned a flag on, a number became
    a prompt, a default prompt naming no prompt was no prompt (sentence-transformers refuses it).
    (Pooling refusals name the module's folder, as its others do.)"""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, prompts=PROMPTS
    )
    path = folder / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(UserError) as refused:
        _recipe(folder)
    assert str(refused.value) == f"{path.parent if file == POOLING_FILE else path}: {message}"


@pytest.mark.parametrize(
    ("file", "change", "prefixes"),
    [
        (POOLING_FILE, {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 0}, None),
        (POOLING_FILE, {"pooling_mode_max_tokens": None, "include_prompt": 1}, None),
        ("sentence_bert_config.json", {"do_lower_case": 0}, None),
        (PROMPTS_FILE, {"prompts": {"query": "q: ", "other": 5}}, ("q: ", "")),
        (PROMPTS_FILE, {"prompts": {"query": "q: "}, "default_prompt_name": "document"}, ("q: ", "")),
    ],
)  # fmt: skip
def test_settings_sentence_transformers_6_loads_are_read_as_it_reads_them(tmp_path, file, change, prefixes):
    """0, 1 and null flags are read by their truth; a prompt no side uses is never read; `query`
    and `document` are always prompt names (empty where the file gives none)."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, prompts=PROMPTS
    )
    path = folder / file
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    recipe = _recipe(folder)
    assert recipe.pooling == "mean" and recipe.lowercase is False
    if prefixes is not None:
        assert (recipe.query_prefix, recipe.passage_prefix) == prefixes


def test_a_folder_where_the_transformer_config_goes_is_refused_not_passed_over(tmp_path):
    """Passed over, the checkpoint's own max_seq_length gave way to the model's positions."""
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    (folder / "sentence_bert_config.json").unlink()
    (folder / "sentence_bert_config.json").mkdir()
    with pytest.raises(
        UserError, match=r"^cannot read sentence-transformers config .*sentence_bert_config\.json: "
    ):
        _recipe(folder)
