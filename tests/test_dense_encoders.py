"""The dense first stage's encoder against independent references, on tiny random checkpoints.

- jina-embeddings-v3 (native `JinaEmbeddingsV3Model`, PEFT LoRA adapters per side): the expectation
  is the adapter-applied model run here by hand (PEFT unmerged, each text alone, masked mean, L2).
- sentence-transformers checkpoints (mean, CLS, max, last token; prompts, Normalize, lower-casing,
  truncation): the expectation is `sentence_transformers.SentenceTransformer` itself.
- the fast path (dedup, length-sorted token-budget batches) against the straightforward one.
- bad input as one-line `UserError`s.
All in float32 on the CPU.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rerank_eval.errors import UserError
from rerank_eval.first_stage.dense.encoder import DenseEncoder
from rerank_eval.first_stage.dense.recipe import read_recipe
from tests import dense_checkpoints
from tests.checkpoints import build_cross_encoder
from tests.dense_checkpoints import NO_OVERRIDES, cpu_encoder
from tests.expected import QueueOverlap

TOLERANCE = 1e-5
BENCHMARKS = Path(__file__).resolve().parents[1] / "rerank_eval" / "config" / "benchmarks.yaml"
LONG = " ".join(["information retrieval ranks passages by relevance to a query"] * 12)
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "The Quick Brown Fox Jumps Over The Lazy Dog",
    "aspirin",
    "vitamin d and calcium keep bones strong",
    LONG,
    "scurvy is caused by a lack of vitamin c",
    "数据检索与排序 日本語の文章",
    "",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    difference = float(np.abs(got - np.asarray(expected, dtype=np.float32)).max())
    assert difference < TOLERANCE, difference


def _apart(a: np.ndarray, b: np.ndarray) -> None:
    """Rows that differ clearly (far more than float error), every one of them."""
    assert (np.abs(a - b).max(axis=1) > 1e-3).all()


# --- jina-embeddings-v3 with PEFT adapters ----------------------------------------------------------


@pytest.fixture(scope="module")
def jina(tmp_path_factory) -> Path:
    return dense_checkpoints.build_jina_embeddings(tmp_path_factory.mktemp("dense") / "jina-v3")


@pytest.fixture(scope="module")
def jina_preset() -> dict:
    """The jina-embeddings-v3 preset as benchmarks.yaml writes it (read here with yaml, not our loader)."""
    return yaml.safe_load(BENCHMARKS.read_text(encoding="utf-8"))["first_stages"]["jina-embeddings-v3"]


def _jina_overrides(preset: dict) -> dict:
    return {name: preset.get(name) for name in NO_OVERRIDES}


@torch.inference_mode()
def _adapted_reference(folder: Path, adapter: str | None, prefix: str, texts: list[str]) -> np.ndarray:
    """The adapter-applied model's own embeddings: base + PEFT adapter (not merged), each text alone
    (no padding), mean over the attention mask, L2-normalised."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(folder / adapter))
    model.eval()
    rows = []
    for text in texts:
        encoded = tokenizer(prefix + text, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state[0]
        mask = encoded["attention_mask"][0].unsqueeze(-1).float()
        mean = (hidden * mask).sum(0) / mask.sum()
        rows.append((mean / mean.norm()).numpy())
    return np.stack(rows)


def test_jina_adapters_match_the_adapted_model(jina, jina_preset):
    overrides = _jina_overrides(jina_preset)
    encoder = cpu_encoder(jina, overrides)
    references = {}
    for side, prefix_key in (("query", "query_prefix"), ("passage", "passage_prefix")):
        adapter = jina_preset["adapters"][side]
        references[side] = _adapted_reference(jina, adapter, jina_preset[prefix_key], TEXTS)
        _close(encoder.embed(TEXTS, side), references[side])
    # the sides really differ (adapter and prefix per side) ...
    _apart(references["query"], references["passage"])
    # ... each adapter matters on its own (same prefix, other adapter: other vectors) ...
    plain = _adapted_reference(jina, None, jina_preset["query_prefix"], TEXTS)
    _apart(references["query"], plain)
    swapped = _adapted_reference(jina, jina_preset["adapters"]["passage"], jina_preset["query_prefix"], TEXTS)
    _apart(references["query"], swapped)
    # ... and going back to the query side after the passage side reloads the query adapter
    _close(encoder.embed(TEXTS[:3], "query"), references["query"][:3])


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_matryoshka_dimensions_are_the_first_coordinates_normalised_after_the_cut(
    jina, jina_preset, tmp_path
):
    """`dimensions: k` keeps the first k coordinates of each pooled vector, then normalises where the
    recipe does (jina-embeddings-v3: against the adapted model run by hand), and keys the cache."""
    overrides = {**_jina_overrides(jina_preset), "dimensions": 8}
    encoder = cpu_encoder(jina, overrides)
    for side, prefix_key in (("query", "query_prefix"), ("passage", "passage_prefix")):
        full = _adapted_reference(jina, jina_preset["adapters"][side], jina_preset[prefix_key], TEXTS)
        _close(encoder.embed(TEXTS, side), _unit_rows(full[:, :8]))
    assert encoder.identity("passage")["recipe"]["dimensions"] == 8
    assert encoder.recipe.to_json()["dimensions"] == 8
    # unset, it is in no key and no manifest (score journals are keyed by the manifest's recipe)
    plain = cpu_encoder(jina, _jina_overrides(jina_preset))
    assert (
        "dimensions" not in plain.identity("passage")["recipe"] and "dimensions" not in plain.recipe.to_json()
    )
    # raw vectors (dot similarity) are cut and left as they are
    dot = dense_checkpoints.build_sentence_transformers(
        tmp_path / "dot", pooling="mean", normalize=False, similarity_fn_name="dot"
    )
    raw = cpu_encoder(dot).embed(TEXTS, "query")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    _close(cpu_encoder(dot, {"dimensions": 8}).embed(TEXTS, "query"), raw[:, :8])
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(dot, {"dimensions": 33})
    assert _one_line(excinfo).endswith("dimensions 33 is more than its vectors' 32")


def test_jina_sides_differ_by_adapter_and_by_prefix(jina, jina_preset):
    adapters = jina_preset["adapters"]
    same_prefix = cpu_encoder(
        jina, {**_jina_overrides(jina_preset), "passage_prefix": jina_preset["query_prefix"]}
    )
    _apart(same_prefix.embed(TEXTS, "query"), same_prefix.embed(TEXTS, "passage"))
    same_adapter = cpu_encoder(
        jina,
        {
            **_jina_overrides(jina_preset),
            "adapters": {"query": adapters["query"], "passage": adapters["query"]},
        },
    )
    _apart(same_adapter.embed(TEXTS, "query"), same_adapter.embed(TEXTS, "passage"))
    # the passage side keys the corpus cache: its identity names the passage adapter and prefix
    identity = same_prefix.identity("passage")["recipe"]
    assert identity["adapter"] == adapters["passage"]
    assert identity["prefix"] == jina_preset["query_prefix"]


def test_jina_merged_and_unmerged_adapters_agree(jina, jina_preset):
    merged = cpu_encoder(jina, _jina_overrides(jina_preset), merge_adapters=True)
    unmerged = cpu_encoder(jina, _jina_overrides(jina_preset), merge_adapters=False)
    for side in ("query", "passage"):
        _close(merged.embed(TEXTS, side), unmerged.embed(TEXTS, side))
    assert merged.identity("query")["merge_adapters"] is True
    assert unmerged.identity("query")["merge_adapters"] is False
    # merged: the plain transformers model runs (no LoRA layers left); unmerged: PEFT's layers
    for side in ("query", "passage"):
        assert not any("lora_" in name for name, _ in merged.model(side).named_parameters())
        assert any("lora_" in name for name, _ in unmerged.model(side).named_parameters())


def test_jina_preset_gives_its_prefixes_and_adapters(jina, jina_preset, monkeypatch):
    """The preset as the CLI loads it (config loader, the kind's own settings-to-encoder path)."""
    from rerank_eval.config.reader import load_config
    from rerank_eval.first_stage.dense import DenseRetrieval
    from rerank_eval.runtime import distributed

    monkeypatch.setattr(distributed, "default_device", lambda: "cpu")  # float32 even where a GPU shows
    settings = dict(load_config().first_stages["jina-embeddings-v3"].settings)
    assert settings["encoder"] == jina_preset["encoder"]
    encoder = DenseRetrieval.build_encoder({**settings, "encoder": str(jina)})
    recipe = encoder.recipe
    assert recipe.query_prefix == jina_preset["query_prefix"]
    assert recipe.passage_prefix == jina_preset["passage_prefix"]
    assert recipe.adapters == jina_preset["adapters"]
    assert (recipe.pooling, recipe.normalize, recipe.max_length) == (
        jina_preset["pooling"], jina_preset["normalize"], jina_preset["max_length"],
    )  # fmt: skip
    assert encoder.device.type == "cpu" and encoder.dtype == torch.float32
    texts = TEXTS[:4]
    for side in ("query", "passage"):
        prefix = jina_preset[f"{side}_prefix"]
        expected = _adapted_reference(jina, jina_preset["adapters"][side], prefix, texts)
        _close(encoder.embed(texts, side), expected)


# --- sentence-transformers checkpoints ---------------------------------------------------------------

PROMPTS = {"query": "search_query: ", "document": "search_document: "}
ST_CASES = {
    "mean-normalized": {"pooling": "mean", "normalize": True},
    # dot similarity, no Normalize module: raw vectors
    "mean-dot": {"pooling": "mean", "normalize": False, "similarity_fn_name": "dot"},
    # cosine similarity without a Normalize module: searched as the inner product of unit vectors
    "mean-cosine": {"pooling": "mean", "normalize": False, "similarity_fn_name": "cosine"},
    # no similarity named: sentence-transformers' default, cosine
    "cls-lowercase": {"pooling": "cls", "normalize": False, "do_lower_case": True},
    "cls-normalized": {"pooling": "cls", "normalize": True, "max_seq_length": 12},
    "max": {"pooling": "max", "normalize": False, "similarity_fn_name": "dot"},
    "lasttoken-normalized": {"pooling": "lasttoken", "normalize": True},
    "lasttoken-raw-lowercase": {
        "pooling": "lasttoken", "normalize": False, "do_lower_case": True, "max_seq_length": 20,
        "similarity_fn_name": "dot",
    },
    # no max_seq_length: the tokenizer's 512, capped at the model's 64 positions (as ST does)
    "mean-no-max-seq-length": {"pooling": "mean", "normalize": True, "max_seq_length": None},
    # an older model's config name (ST reads sentence_xlm-roberta_config.json and the like)
    "mean-legacy-config-name": {
        "pooling": "mean", "normalize": True, "do_lower_case": True, "max_seq_length": 12,
        "transformer_config": "sentence_xlm-roberta_config.json",
    },
}  # fmt: skip


def _sentence_transformer(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu")


def _st_reference(model, texts: list[str], side: str, normalize: bool = False) -> np.ndarray:
    prompt_name = "query" if side == "query" else "document"
    vectors = model.encode(
        texts, prompt_name=prompt_name, convert_to_numpy=True, batch_size=3, normalize_embeddings=normalize
    )
    return np.asarray(vectors, dtype=np.float32)


@pytest.mark.parametrize("case", list(ST_CASES))
def test_sentence_transformers_layout_matches_sentence_transformers(tmp_path, case):
    settings = ST_CASES[case]
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / case, prompts=PROMPTS, **settings)
    _matches_sentence_transformers(folder, _sentence_transformer(folder), settings)


def _matches_sentence_transformers(folder: Path, reference, settings: dict) -> None:
    pooling, normalize = settings["pooling"], settings["normalize"]
    lowercase = settings.get("do_lower_case", False)
    similarity = settings.get("similarity_fn_name") or "cosine"  # sentence-transformers' default
    limit = reference.max_seq_length
    # the long text really is cut (so truncation is exercised), at the limit ST uses
    tokenizer = reference.tokenizer
    assert len(tokenizer(PROMPTS["document"] + LONG)["input_ids"]) > limit
    if pooling == "lasttoken":
        # ST pads on the side the tokenizer says (left, as Qwen3-Embedding's) and takes the last
        # position; we pad on the right and take the last real token. With causal attention and
        # rotary (relative) positions the two agree to float error, which the comparison holds.
        assert tokenizer.padding_side == "left"
    encoder = cpu_encoder(folder)
    assert encoder.recipe.max_length == limit
    assert encoder.recipe.pooling == pooling
    for side in ("query", "passage"):
        # cosine similarity (without a Normalize module) is searched as the inner product of unit
        # vectors: ST's cosine is that of its raw vectors
        expected = _st_reference(reference, TEXTS, side, normalize=similarity == "cosine")
        got = encoder.embed(TEXTS, side)
        _close(got, expected)
        norms = np.linalg.norm(got, axis=1)
        if normalize or similarity == "cosine":
            np.testing.assert_allclose(norms, 1.0, atol=1e-5)
        else:
            assert np.abs(norms - 1.0).max() > 1e-2
    # the prompts are applied per side
    _apart(encoder.embed(TEXTS, "query"), encoder.embed(TEXTS, "passage"))
    # TEXTS[1] is TEXTS[0] capitalised: the same vector when lower-casing, another one otherwise (the
    # tokenizers keep case themselves, so that this tells)
    pair = encoder.embed(TEXTS[:2], "query")
    if lowercase:
        assert np.array_equal(pair[0], pair[1])
    else:
        _apart(pair[:1], pair[1:])


@pytest.mark.parametrize(
    "case", ["cls-normalized", "max", "lasttoken-raw-lowercase", "mean-dot", "mean-no-max-seq-length"]
)
def test_the_bi_encoder_reranker_scores_as_sentence_transformers_embeds(tmp_path, case):
    """The bi-encoder family reads a sentence-transformers checkpoint's own pooling, normalisation,
    length, lower-casing and prompts (as the dense first stage does): its scores are the
    similarity sentence-transformers gives (cosine unless the checkpoint says dot)."""
    from rerank_eval.rerankers import load_reranker

    settings = ST_CASES[case]
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / case, prompts=PROMPTS, **settings)
    reference = _sentence_transformer(folder)
    cosine = (settings.get("similarity_fn_name") or "cosine") == "cosine"
    query = "what is the quick brown fox"
    expected = (
        _st_reference(reference, TEXTS, "passage", cosine)
        @ _st_reference(reference, [query], "query", cosine)[0]
    )
    if case == "mean-no-max-seq-length":  # and in the older layout, the transformer in a subfolder
        (folder / "0_Transformer").mkdir()
        for path in folder.iterdir():
            if path.is_file() and path.name not in ("modules.json", "config_sentence_transformers.json"):
                path.rename(folder / "0_Transformer" / path.name)
        modules = json.loads((folder / "modules.json").read_text())
        modules[0]["path"] = "0_Transformer"
        (folder / "modules.json").write_text(json.dumps(modules))
    reranker = load_reranker(str(folder), family="bi-encoder", device="cpu")
    got = np.array(reranker.score(query, TEXTS), dtype=np.float32)
    _close(got, expected.astype(np.float32))
    assert reranker.max_length == reference.max_seq_length
    # a max_length set for the run wins over the checkpoint's own
    assert load_reranker(str(folder), family="bi-encoder", device="cpu", max_length=7).max_length == 7
    recorded = reranker.describe()
    assert recorded["embedding"]["pooling"] == settings["pooling"]
    assert recorded["embedding"]["query_prefix"] == PROMPTS["query"]
    assert reranker.score_identity()["embedding"] == recorded["embedding"]
    assert recorded["score_head"].startswith("cosine" if cosine or settings["normalize"] else "inner product")


@pytest.mark.parametrize("case", ["lasttoken-raw-lowercase", "cls-normalized", "mean-cosine"])
def test_a_checkpoint_saved_by_sentence_transformers_itself(tmp_path, case):
    """The layout sentence-transformers 6 writes: long module type paths, `pooling_mode` spelled out,
    the length and lower-casing moved into the tokenizer's own files."""
    settings = ST_CASES[case]
    built = dense_checkpoints.build_sentence_transformers(tmp_path / "built", prompts=PROMPTS, **settings)
    _sentence_transformer(built).save(str(tmp_path / "saved"))
    saved = tmp_path / "saved"
    pooling_config = json.loads((saved / "1_Pooling" / "config.json").read_text())
    assert pooling_config["pooling_mode"] == settings["pooling"]
    if case == "cls-normalized":  # also the list form (one mode)
        pooling_config["pooling_mode"] = [settings["pooling"]]
        (saved / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    # ST 6 writes the similarity it scores with (cosine unless the checkpoint named another)
    similarity = json.loads((saved / "config_sentence_transformers.json").read_text())["similarity_fn_name"]
    assert similarity == (settings.get("similarity_fn_name") or "cosine")
    saved_settings = {**settings, "similarity_fn_name": similarity}
    _matches_sentence_transformers(saved, _sentence_transformer(saved), saved_settings)


@pytest.mark.parametrize(
    ("prompts", "default_prompt_name", "query_prompt", "passage_prompt"),
    [
        ({"query": "q: ", "document": "d: "}, None, "q: ", "d: "),
        ({"query": "q: ", "passage": "p: "}, None, "q: ", "p: "),
        ({"query": "q: ", "corpus": "c: "}, None, "q: ", "c: "),
        ({"query": "q: ", "document": "d: ", "passage": "p: "}, None, "q: ", "d: "),
        ({"query": "q: ", "document": "", "other": "o: "}, "other", "q: ", ""),
        ({"passage": "p: ", "classification": "k: "}, "classification", "k: ", "p: "),
        ({"clustering": "k: "}, None, "", ""),
    ],
)
def test_prompt_names_as_sentence_transformers_picks_them(
    tmp_path, prompts, default_prompt_name, query_prompt, passage_prompt
):
    """Which prompt each side gets, by the rule of sentence-transformers' encode_query and
    encode_document as documented (and as ST 5 applies it): `query`; `document`, `passage`, `corpus`
    in that order; otherwise the default prompt. ST 6.2 fills absent `query`/`document` with "" first,
    so it never reaches `passage`, `corpus` or the default there; the expectation is ST's own
    `encode` given the prompt that rule picks (and, where both rules agree, encode_query and
    encode_document themselves)."""
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st",
        pooling="mean",
        normalize=True,
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )
    reference = _sentence_transformer(folder)
    encoder = cpu_encoder(folder)
    assert (encoder.recipe.query_prefix, encoder.recipe.passage_prefix) == (query_prompt, passage_prompt)
    texts = TEXTS[:4]
    for side, prompt in (("query", query_prompt), ("passage", passage_prompt)):
        expected = reference.encode(texts, prompt=prompt, convert_to_numpy=True)
        _close(encoder.embed(texts, side), expected)
    if "query" in prompts and "document" in prompts:
        _close(encoder.embed(texts, "query"), reference.encode_query(texts, convert_to_numpy=True))
        _close(encoder.embed(texts, "passage"), reference.encode_document(texts, convert_to_numpy=True))


def test_preset_settings_win_over_the_files(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=False, prompts=PROMPTS, max_seq_length=16
    )
    overrides = {"pooling": "cls", "normalize": True, "max_length": 8, "query_prefix": "Q: "}
    encoder = cpu_encoder(folder, overrides)
    recipe = encoder.recipe
    assert (recipe.pooling, recipe.normalize, recipe.max_length) == ("cls", True, 8)
    assert (recipe.query_prefix, recipe.passage_prefix) == ("Q: ", PROMPTS["document"])
    # the same as ST told the same: CLS pooling, 8 tokens, unit vectors, the preset's query prefix
    reference = _sentence_transformer(folder)
    reference.max_seq_length = 8
    pooled = next(m for m in reference if type(m).__name__ == "Pooling")
    pooled.pooling_mode = "cls"
    expected = reference.encode(TEXTS, prompt="Q: ", convert_to_numpy=True, normalize_embeddings=True)
    _close(encoder.embed(TEXTS, "query"), expected)


# --- fast path = straightforward path ----------------------------------------------------------------

MIXED = [*TEXTS, TEXTS[0], LONG, "aspirin", TEXTS[3], "a b", "vitamin", TEXTS[0]]


@pytest.fixture(scope="module")
def st_mean(tmp_path_factory) -> Path:
    return dense_checkpoints.build_sentence_transformers(
        tmp_path_factory.mktemp("dense") / "st-mean", pooling="mean", normalize=True, prompts=PROMPTS
    )


@pytest.fixture(scope="module")
def st_lasttoken(tmp_path_factory) -> Path:
    return dense_checkpoints.build_sentence_transformers(
        tmp_path_factory.mktemp("dense") / "st-last", pooling="lasttoken", normalize=False, prompts=PROMPTS
    )


@pytest.mark.parametrize("which", ["jina", "st_mean", "st_lasttoken"])
def test_fast_path_equals_straightforward_path(request, jina_preset, which):
    folder = request.getfixturevalue(which)
    overrides = _jina_overrides(jina_preset) if which == "jina" else {}
    for side in ("query", "passage"):
        straightforward = cpu_encoder(folder, overrides).embed_straightforward(MIXED, side, batch_size=4)
        fast = cpu_encoder(folder, overrides)
        _close(fast.embed(MIXED, side), straightforward)
        distinct = len(set(MIXED))
        assert fast.stats["forward_passes"] == 1  # the default budget holds them all
        # a tiny budget: many length-sorted batches, and still the same vectors
        tiny = cpu_encoder(folder, overrides, max_batch_tokens=24)
        _close(tiny.embed(MIXED, side), straightforward)
        assert tiny.stats["forward_passes"] >= distinct // 2
        # each distinct text once; duplicates get their first occurrence's row
        lengths = [len(row) for row in tiny.tokenize(list(dict.fromkeys(MIXED)), side)]
        assert tiny.stats["tokens"] == sum(lengths)
        vectors = tiny.embed(MIXED, side)
        for i, text in enumerate(MIXED):
            assert np.array_equal(vectors[i], vectors[MIXED.index(text)])


def test_texts_in_several_chunks_give_the_same_vectors(st_mean, monkeypatch):
    """`embed` tokenizes chunk by chunk (the next one while this one runs), chunks growing from the
    first size to the largest; chunk boundaries, with duplicates on both sides of them, change nothing."""
    from rerank_eval.first_stage.dense import encoder as encoder_module

    straightforward = cpu_encoder(st_mean).embed_straightforward(MIXED, "passage", batch_size=4)
    monkeypatch.setattr(encoder_module, "EMBED_CHUNK", 3)
    distinct = len(set(MIXED))
    assert encoder_module.chunk_bounds(distinct, 1)[:3] == [(0, 1), (1, 3), (3, 6)]
    chunked = cpu_encoder(st_mean)
    assert chunked.first_chunk == 3  # a CPU: every chunk the largest
    chunked.first_chunk = 1  # as on a GPU
    _close(chunked.embed(MIXED, "passage"), straightforward)
    assert chunked.stats["forward_passes"] == 2 + -(-(distinct - 3) // 3)  # chunks of 1, 2, then 3


def test_a_cpu_reports_each_batch_as_it_runs(st_mean):
    """On a CPU a batch has run when it is queued: `progress` hears, after each batch, the share of
    the positions run so far."""
    encoder, shares = cpu_encoder(st_mean, max_batch_tokens=16), []
    rows = encoder.tokenize(list(dict.fromkeys(MIXED)), "passage")
    passes = encoder.stats["forward_passes"]
    encoder.queue_tokens(rows, "passage", progress=shares.append).result()
    assert len(shares) == encoder.stats["forward_passes"] - passes > 2
    assert shares == sorted(shares) and shares[-1] == 1.0


@pytest.mark.parametrize("packed", [False, True])
def test_the_share_of_work_reported_is_the_share_of_positions_run(st_mean, packed):
    """The longest text goes first, alone: it is half the work, not a fifth (a count of texts made a
    one-shard corpus's first estimate three times too long)."""
    encoder, shares = cpu_encoder(st_mean, max_batch_tokens=8), []
    encoder.packed_sequences = packed  # (the batching rule alone: no model runs packed on a CPU)
    encoder._forward = lambda texts, side: torch.zeros((len(texts), 4))
    encoder.queue_tokens([[5] * 8, [5] * 2, [5] * 2, [5] * 2, [5] * 2], "passage", progress=shares.append)
    assert shares == [0.5, 1.0]  # 1 x 8 positions, then 4 x 2


def test_the_next_chunk_is_queued_before_this_ones_vectors_are_taken(st_mean, monkeypatch):
    """On a GPU the device runs from one chunk into the next while the host takes vectors back: each
    chunk's batches are queued before the previous chunk's result is waited for."""
    from rerank_eval.first_stage.dense import encoder as encoder_module

    expected = cpu_encoder(st_mean).embed(MIXED, "passage")
    monkeypatch.setattr(encoder_module, "EMBED_CHUNK", 3)
    encoder, overlap, calls = cpu_encoder(st_mean), QueueOverlap(patience=5), []
    chunks = len(encoder_module.chunk_bounds(len(set(MIXED)), encoder.first_chunk))
    queue = encoder.queue_tokens

    def watched_queue(rows, side):
        index = len(calls)
        calls.append(index)
        queued = queue(rows, side)
        taken = queued.result

        def watched_result():
            overlap.taken(index, last=index == chunks - 1)
            return taken()

        queued.result = watched_result
        overlap.queued(index)
        return queued

    monkeypatch.setattr(encoder, "queue_tokens", watched_queue)
    _close(encoder.embed(MIXED, "passage"), expected)
    assert chunks >= 3 and calls == list(range(chunks)) and overlap.missed == []


def test_chunks_grow_by_doubling_up_to_the_largest():
    from rerank_eval.first_stage.dense.encoder import EMBED_CHUNK, FIRST_EMBED_CHUNK, chunk_bounds

    assert (FIRST_EMBED_CHUNK, EMBED_CHUNK) == (1024, 8192)
    sizes = [end - start for start, end in chunk_bounds(20_000, FIRST_EMBED_CHUNK)]
    assert sizes == [1024, 2048, 4096, 8192, 20_000 - 15_360]
    assert [end - start for start, end in chunk_bounds(20_000, EMBED_CHUNK)] == [8192, 8192, 3616]
    assert chunk_bounds(500, 1024) == [(0, 500)] and chunk_bounds(0, 1024) == []
    bounds = chunk_bounds(100_003, 1024)  # contiguous, covering every text once
    assert bounds[0][0] == 0 and bounds[-1][1] == 100_003
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_empty_input(st_mean):
    encoder = cpu_encoder(st_mean)
    assert encoder.embed([], "query").shape[0] == 0
    assert encoder.embed_straightforward([], "query").shape[0] == 0


# --- bad input, one line each ------------------------------------------------------------------------


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_a_reranker_is_not_a_bi_encoder(tmp_path):
    folder = build_cross_encoder(tmp_path / "reranker")
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    message = _one_line(excinfo)
    assert "not a bi-encoder" in message and "BertForSequenceClassification" in message


@pytest.mark.parametrize(
    "architectures", ['["BertModel"]', '"BertForSequenceClassification"', '[1, {"a": 2}]', "5"]
)
def test_a_bare_transformer_is_not_a_bi_encoder(tmp_path, architectures):
    """Whatever its config's `architectures` holds, only its names are read (a string is no list of
    names: its letters are no architecture)."""
    folder = tmp_path / "bare"
    folder.mkdir()
    config = f'{{"model_type": "bert", "architectures": {architectures}}}'
    (folder / "config.json").write_text(config)
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert _one_line(excinfo) == (
        f"encoder {folder} is not a bi-encoder: it has no modules.json and no pooling setting; give a "
        "sentence-transformers checkpoint or set pooling (mean, cls, lasttoken, max)"
    )


def test_an_unsupported_module_is_refused(tmp_path):
    weights = {"path": "2_WordWeights", "type": "sentence_transformers.models.WordWeights"}
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, extra_modules=[weights]
    )
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    message = _one_line(excinfo)
    assert "sentence_transformers.models.WordWeights" in message and "not supported" in message


def test_an_unsupported_pooling_is_refused(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    config_path = folder / "1_Pooling" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    config_path.write_text(json.dumps(config))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert "pooling_mode_weightedmean_tokens is not supported" in _one_line(excinfo)


@pytest.mark.parametrize("side", ["query", "passage"])
def test_a_missing_adapter_is_refused_before_any_encoding(tmp_path, jina, jina_preset, side):
    folder = tmp_path / "jina"
    shutil.copytree(jina, folder)
    missing = jina_preset["adapters"][side]
    shutil.rmtree(folder / missing)
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder, _jina_overrides(jina_preset))  # not at the first embed, after the corpus
    message = _one_line(excinfo)
    assert repr(missing) in message and "no adapter" in message


def test_an_adapter_without_weights_is_refused_at_build(tmp_path, jina, jina_preset):
    folder = tmp_path / "jina"
    shutil.copytree(jina, folder)
    (folder / jina_preset["adapters"]["query"] / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder, _jina_overrides(jina_preset))
    assert "adapter_model.safetensors" in _one_line(excinfo)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("retrieval_query/adapter_config.json", "cannot load adapter retrieval_query"),
        ("model.safetensors", "cannot read the weights"),
        ("tokenizer.json", "cannot load the tokenizer"),
    ],
)
def test_damaged_checkpoint_files_are_one_line(tmp_path, jina, jina_preset, damage, expected):
    folder = tmp_path / "jina"
    shutil.copytree(jina, folder)
    (folder / damage).write_bytes((folder / damage).read_bytes()[:40])  # cut short
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder, _jina_overrides(jina_preset)).embed(["a text"], "query")
    assert expected in _one_line(excinfo)


def test_a_similarity_that_is_not_an_inner_product_is_refused(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=False, similarity_fn_name="euclidean"
    )
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert "'euclidean' is not an inner product" in _one_line(excinfo)


def test_a_max_length_beyond_the_positions_is_refused(tmp_path):
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    positions = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder, {"max_length": positions + 1})
    assert f"beyond the model's {positions} positions" in _one_line(excinfo)


def test_out_of_memory_splits_only_the_failing_batch(st_mean, monkeypatch):
    """A batch over a (simulated) memory limit is split; every other batch is formed as without it,
    the configured budget (part of the cache key) stays, and the vectors are the same."""
    import torch

    texts = list(dict.fromkeys(MIXED))
    expected = cpu_encoder(st_mean, max_batch_tokens=64).embed(texts, "passage")
    encoder = cpu_encoder(st_mean, max_batch_tokens=64)
    identity = encoder.identity("passage")
    forward = DenseEncoder._forward
    sizes = []

    def limited(self, rows, side):
        tokens = len(rows) * max(len(r) for r in rows)
        if tokens > 40 and len(sizes) == 0:  # the first batch over 40 tokens runs out, once
            sizes.append(tokens)
            raise torch.OutOfMemoryError("simulated")
        return forward(self, rows, side)

    monkeypatch.setattr(DenseEncoder, "_forward", limited)
    _close(encoder.embed(texts, "passage"), expected)
    assert sizes and encoder.stats["out_of_memory_retries"] == 1
    assert encoder.max_batch_tokens == 64 and encoder.identity("passage") == identity


def test_the_documented_256_dimension_entry_is_the_preset_cut_to_256(tmp_path):
    """docs/dense-first-stage.md's own first stage reads through the config loader as the packaged
    jina-embeddings-v3 preset with `dimensions: 256` and nothing else changed."""
    from rerank_eval.config.reader import load_config

    page = (BENCHMARKS.parents[2] / "docs" / "dense-first-stage.md").read_text(encoding="utf-8")
    (block,) = [b.split("\n", 1)[1] for b in page.split("```")[1::2] if b.startswith("yaml\n")]
    (tmp_path / "mine.yaml").write_text(block, encoding="utf-8")
    config = load_config(tmp_path / "mine.yaml")
    mine, preset = config.first_stage("jina-embeddings-v3-256"), config.first_stage("jina-embeddings-v3")
    assert mine.settings == {**preset.settings, "dimensions": 256}
    assert preset.settings["dimensions"] is None


# --- checkpoints that say more than a model should (found by a hostile-input probe) ---------------------


def _st(tmp_path: Path, **options) -> Path:
    return dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, **options
    )


@pytest.mark.parametrize("path", ["../model", "/tmp/model", "sub/../../model"])
def test_a_module_path_out_of_the_checkpoint_is_refused(tmp_path, path):
    """Files read from outside the folder are not in its content hash, so not in any cache key:
    two checkpoints pointing at different weights had one key, and the second reused the first's run."""
    folder = _st(tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["path"] = path  # the Pooling module's
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert _one_line(excinfo) == (
        f"{folder / 'modules.json'}: module path: {path!r} leads outside the checkpoint folder {folder}"
    )


def test_a_module_folder_that_links_out_of_the_checkpoint_is_refused(tmp_path):
    """The content hash does not follow a link to a folder: the files behind it, changed, would
    leave every cache key as it was."""
    folder = _st(tmp_path)
    shutil.move(folder / "1_Pooling", tmp_path / "pooling-elsewhere")
    (folder / "1_Pooling").symlink_to(tmp_path / "pooling-elsewhere", target_is_directory=True)
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert _one_line(excinfo) == (
        f"{folder / 'modules.json'}: module path: '1_Pooling' leads outside the checkpoint folder {folder}"
    )
    (folder / "1_Pooling").unlink()  # a link to a folder inside the checkpoint is as good as the folder
    shutil.move(tmp_path / "pooling-elsewhere", folder / "pooling-here")
    (folder / "1_Pooling").symlink_to("pooling-here", target_is_directory=True)
    assert cpu_encoder(folder).recipe.pooling == "mean"


def test_an_adapter_out_of_the_checkpoint_is_refused(tmp_path, jina, jina_preset):
    outside = tmp_path / "elsewhere"
    shutil.copytree(jina / jina_preset["adapters"]["query"], outside)
    overrides = _jina_overrides(jina_preset)
    overrides["adapters"] = {**overrides["adapters"], "query": "../elsewhere"}
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(jina, overrides).embed(["a text"], "query")
    assert "'../elsewhere' leads outside the checkpoint folder" in _one_line(excinfo)


def test_a_config_file_that_is_no_file_is_refused_before_it_is_read(tmp_path):
    folder = _st(tmp_path)
    (folder / "1_Pooling" / "config.json").unlink()
    (folder / "1_Pooling" / "config.json").symlink_to("/dev/zero")  # (read whole, it never ends)
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert (
        _one_line(excinfo) == f"checkpoint {folder}: 1_Pooling/config.json is a character device, not a file"
    )


BERT_CONFIG, PROMPTS_FILE = "sentence_bert_config.json", "config_sentence_transformers.json"


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        (BERT_CONFIG, {"max_seq_length": -5}, "max_seq_length must be a positive integer, not -5"),
        (BERT_CONFIG, {"max_seq_length": True}, "max_seq_length must be a positive integer, not True"),
        (PROMPTS_FILE, {"similarity_fn_name": ["dot"]}, "similarity ['dot'] is not an inner"),
        (PROMPTS_FILE, {"prompts": {"query": "q: "}, "default_prompt_name": ["x"]},
         "default_prompt_name must be a name, not ['x']"),
    ],
)  # fmt: skip
def test_odd_values_in_sentence_transformers_files_are_one_line(tmp_path, file, content, expected):
    folder = _st(tmp_path)
    (folder / file).write_text(json.dumps(content))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert expected in _one_line(excinfo)


@pytest.mark.parametrize("value", ["512", 1.5, None, True, 0])
def test_an_odd_position_count_in_the_model_config_is_one_line(tmp_path, value):
    """transformers refused 1.5 and null in many lines (and blamed the tokenizer); `true` was 1."""
    folder = _st(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": value}))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert _one_line(excinfo) == (
        f"{folder / 'config.json'}: max_position_embeddings must be a positive integer, not {value!r}"
    )


@pytest.mark.parametrize("value", [True, "128", 1e30, None])
def test_a_tokenizer_limit_that_is_no_real_number_leaves_the_default_length(tmp_path, value):
    """With no max_seq_length, the length is the tokenizer's limit capped at the positions; a limit
    that is no number (or 1e30, transformers' "none") leaves 512 capped so. `true` read as 1."""

    folder = _st(tmp_path, max_seq_length=None)
    path = folder / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_max_length": value}))
    positions = json.loads((folder / "config.json").read_text())["max_position_embeddings"]
    recipe = read_recipe(folder, str(folder), dict(NO_OVERRIDES))
    assert recipe.max_length == min(512, positions)


@pytest.mark.parametrize("kind", ["Transformer", "Pooling", "Normalize"])
def test_a_second_module_of_a_kind_run_once_is_refused(tmp_path, kind):
    """sentence-transformers would run it on the first's output; we would have kept one of them."""
    folder = _st(tmp_path)
    modules = json.loads((folder / "modules.json").read_text())
    (module,) = [entry for entry in modules if entry["type"].endswith(f".{kind}")]
    (folder / "modules.json").write_text(json.dumps([*modules, {**module, "idx": len(modules)}]))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder)
    assert _one_line(excinfo) == f"{folder / 'modules.json'}: more than one {kind} module is not supported"


@pytest.mark.parametrize("side", ["query", "passage"])
def test_a_prefix_longer_than_an_instruction_is_refused_before_encoding(tmp_path, side):
    """It is joined to every text of a shard before texts are cut: 500 KB took 5 GB and a traceback."""
    from rerank_eval.first_stage.dense.recipe import MAX_PREFIX_CHARACTERS

    folder = _st(tmp_path)
    cpu_encoder(folder, {f"{side}_prefix": "a" * MAX_PREFIX_CHARACTERS})  # (as long as it may be)
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder, {f"{side}_prefix": "a" * (MAX_PREFIX_CHARACTERS + 1)})
    assert _one_line(excinfo) == (
        f"encoder {folder}: its {side} prefix is 4,097 characters long, more than 4,096 (an instruction, "
        "not a document)"
    )


def test_weights_of_no_tensor_of_the_configured_model_are_refused(tmp_path):
    """A config.json of another architecture over the weights: transformers loads it with every
    weight initialised at random (only shapes of tensors of matching names were compared)."""
    folder = _st(tmp_path)
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    t5 = {"model_type": "t5", "architectures": ["T5EncoderModel"], "vocab_size": vocab_size, "d_model": 32,
          "num_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 37}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(t5))
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder).embed(["a text"], "query")
    assert "none of its" in _one_line(
        excinfo
    ) and "T5EncoderModel): are they of the same model?" in _one_line(excinfo)


def test_a_tokenizer_far_smaller_than_the_vocabulary_is_refused(tmp_path):
    """Without its files transformers builds a tokenizer of 5 special tokens: every word was the one
    unknown token, every score tied, and the run ended with exit 0."""
    folder = _st(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(UserError) as excinfo:
        cpu_encoder(folder).embed(["a text"], "query")
    assert "are its tokenizer files missing, or of another model?" in _one_line(excinfo)
