"""The dense first stage's rules that move a run, a cache key or a manifest without failing loudly:
what keys the cached run and the corpus embeddings, what the manifest records, which encoder a
second dataset reuses, and the device, dtype and batch choices of `models/common.py`. (A mutation
round on `first_stage/dense/__init__.py`, the recipe reader and `models/common.py` found each of
these untested.) The encoder is a stub where only the keys are under test: no model runs there."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rerank_eval.config.schema import DatasetSpec, FirstStageSpec
from rerank_eval.datasets.ir_dataset import IrDataset
from rerank_eval.errors import UserError
from rerank_eval.first_stage import FirstStageRequest
from rerank_eval.first_stage import dense as dense_module
from rerank_eval.first_stage.dense import corpus as corpus_module
from rerank_eval.first_stage.dense import encoding as encoding_module
from rerank_eval.first_stage.dense import run_cache
from rerank_eval.first_stage.dense.recipe import read_recipe
from rerank_eval.models import common
from rerank_eval.runfiles import read_run
from tests import dense_checkpoints
from tests.dense_checkpoints import NO_OVERRIDES

CPU = torch.device("cpu")
CUDA = torch.device("cuda")

# --- the cached run and the corpus embeddings: their keys ------------------------------------------


class _StubEncoder:
    """What `obtain` and `corpus_cache` read of an encoder; each side's identity is given."""

    def __init__(self, query: str = "q", passage: str = "p") -> None:
        self.sides = {"query": query, "passage": passage}
        self.checkpoint = SimpleNamespace(
            source="stub", revision="rev-1", identity=lambda: {"source": "stub"}
        )
        self.recipe = SimpleNamespace(to_json=lambda: {"pooling": "mean"})
        self.device = CPU
        self.fused_kernels, self.packed_sequences = False, True
        self.max_batch_tokens, self.pad_multiple = 96, 8

    def identity(self, side: str) -> dict:
        return {"side": side, "prompt": self.sides[side], "dtype": "bfloat16"}


def _request(settings: dict, queries: dict[str, str], depth: int = 10, dataset_id: str = "beir/nq"):
    spec = DatasetSpec("nq", dataset_id, "en", "x", False, True)
    source = FirstStageSpec("x", "dense", "dense x", settings=settings)
    return FirstStageRequest(spec, source, IrDataset(spec), queries, depth)


class _Searches:
    """`_search` as a list of the runs it was asked for; each writes a one-line run per query."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, request, encoder, run_path: Path) -> dict:
        self.paths.append(run_path)
        run = {q: {"d1": 1.0, "d2": 0.5} for q in request.queries}
        run_cache.write_run(run_path, run, {"corpus_documents": 2, "corpus_sha256": "c0ffee"})
        return {"ranks": [{"rank": 0}]}


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """A dense kind whose encoder is `_StubEncoder` (swap `.encoder_now`) and whose search is `_Searches`."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    retrieval = dense_module.DenseRetrieval()
    retrieval.encoder_now = _StubEncoder()
    retrieval.encoder = lambda settings: retrieval.encoder_now
    retrieval.searches = _Searches()
    retrieval._search = retrieval.searches
    retrieval.settings_now = retrieval.validate("x", {"encoder": "stub"})
    return retrieval


QUERIES = {"1": "aspirin", "2": "scurvy"}


def test_the_cached_run_is_kept_per_depth_query_batch_queries_and_encoder(stubbed):
    """The run file in the cache is used as it is: anything that decides it (the depth, the
    query batch that decides each product's summation order, the query texts, either side's
    encoder identity) must lead to a search of its own, and the same request to none."""
    settings = stubbed.settings_now

    def searched(request) -> bool:
        before = len(stubbed.searches.paths)
        stubbed.obtain(request)
        return len(stubbed.searches.paths) > before

    assert searched(_request(settings, QUERIES))
    assert not searched(_request(settings, QUERIES))
    assert searched(_request(settings, QUERIES, depth=20))
    assert searched(_request({**settings, "query_batch": 7}, QUERIES))
    assert searched(_request(settings, {**QUERIES, "2": "vitamin c"}))
    assert searched(_request(settings, {"1": "aspirin", "3": "scurvy"}))
    stubbed.encoder_now = _StubEncoder(query="another query prompt")
    assert searched(_request(settings, QUERIES))
    stubbed.encoder_now = _StubEncoder(passage="another passage prompt")
    assert searched(_request(settings, QUERIES))
    # settings of how the run is computed, and no other, leave the cached run in use
    stubbed.encoder_now = _StubEncoder()
    assert not searched(_request({**settings, "max_batch_tokens": 5, "merge_adapters": False}, QUERIES))
    assert len(set(stubbed.searches.paths)) == len(stubbed.searches.paths)


def test_the_run_record_names_the_encoder_its_recipe_and_how_the_run_was_computed(stubbed):
    """The manifest's first stage: each value from where it is decided (the budget in effect, not
    the setting), and the corpus the run was searched over."""
    settings = {**stubbed.settings_now, "max_batch_tokens": 4096, "query_batch": 7}
    run, record = stubbed.obtain(_request(settings, QUERIES, depth=30))
    assert {q: list(docs) for q, docs in run.items()} == {"1": ["d1", "d2"], "2": ["d1", "d2"]}
    (path,) = stubbed.searches.paths
    assert record.kind == "dense" and record.label == "dense x" and record.path == str(path)
    assert record.sha256 == read_run(path).sha256 and record.revision == "rev-1"
    assert record.execution == {"run_cached": False, "ranks": [{"rank": 0}]}
    assert record.settings == {
        "encoder": {"source": "stub"},
        "recipe": {"pooling": "mean"},
        "dtype": "bfloat16",
        "device": "cpu",
        "merge_adapters": True,
        "fused_kernels": False,
        "packed_sequences": True,
        "storage": "float16",
        "shard_size": 65_536,
        "max_batch_tokens": 96,
        "pad_multiple": 8,
        "query_batch": 7,
        "depth": 30,
        "search": "exact inner product, float32 scores; ties by doc id as trec_eval",
        "corpus_documents": 2,
        "corpus_sha256": "c0ffee",
    }
    again = stubbed.obtain(_request(settings, QUERIES, depth=30))[1]
    assert again.execution == {"run_cached": True} and again.settings == record.settings


@pytest.mark.parametrize("damage", ["record removed", "record not JSON", "record not object", "run changed"])
def test_a_cached_run_that_cannot_be_trusted_is_one_line_naming_what_to_delete(stubbed, damage):
    """The manifest records the corpus a run was searched over from the `.json` beside the cached
    run: with it gone or damaged the run is not used without it. A run edited since it was written
    (here another document in a place, the scores unchanged) passed its change into every later
    result: its record's hash tells. Each time the line says what to do, and doing it works."""
    request = _request(stubbed.settings_now, QUERIES)
    stubbed.obtain(request)
    (path,) = stubbed.searches.paths
    record = path.with_suffix(".json")
    if damage == "run changed":
        path.write_text(path.read_text().replace(" d2 ", " d9 "))
        what = "is not the run written there (its hash differs from its record's)"
    else:
        what = f"has no readable record of its corpus beside it ({path.stem}.json)"
        if damage == "record removed":
            record.unlink()
        else:
            record.write_text("{" if damage == "record not JSON" else "[]")
    with pytest.raises(UserError) as refused:
        stubbed.obtain(request)
    assert str(refused.value) == f"the dense run {path} {what}; delete the run to search again"
    path.unlink()
    run, again = stubbed.obtain(request)
    assert again.execution["run_cached"] is False and again.settings["corpus_sha256"] == "c0ffee"
    assert set(run["1"]) == {"d1", "d2"}


def test_a_cached_run_written_before_runs_were_hashed_is_kept_and_its_hash_recorded(stubbed):
    """Searching it again would need the corpus embeddings, which its record lets a user delete."""
    request = _request(stubbed.settings_now, QUERIES)
    stubbed.obtain(request)
    (path,) = stubbed.searches.paths
    record = path.with_suffix(".json")
    record.write_text(json.dumps({"corpus_documents": 2, "corpus_sha256": "c0ffee"}))
    assert stubbed.obtain(request)[1].execution == {"run_cached": True}
    assert json.loads(record.read_text())["run_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(stubbed.searches.paths) == 1


def test_a_run_rewritten_and_cut_short_leaves_no_earlier_run_beside_the_new_record(tmp_path, monkeypatch):
    """The record goes first, the run last: killed in between, the earlier run beside the new
    record's hash would be refused by every later command; without it, the next one searches."""
    path = tmp_path / "runs" / "x.trec"
    run_cache.write_run(path, {"1": {"a": 1.0}}, {"corpus_documents": 1})
    written = run_cache.write_file

    def killed_at_the_run(target, write):
        if target == path:
            raise KeyboardInterrupt
        written(target, write)

    monkeypatch.setattr(run_cache, "write_file", killed_at_the_run)
    with pytest.raises(KeyboardInterrupt):
        run_cache.write_run(path, {"1": {"b": 2.0}}, {"corpus_documents": 1})
    assert not path.exists() and run_cache.kept_run(path) is False


def test_the_corpus_embeddings_are_kept_per_storage_shard_size_and_passage_encoder(tmp_path, monkeypatch):
    """The corpus cache folder: another storage, shard size or passage-side encoder is another
    folder (each changes the stored vectors or their shards); the query side never moves it."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path))
    retrieval = dense_module.DenseRetrieval()
    settings = retrieval.validate("x", {"encoder": "stub"})

    def folder(encoder=None, **changes) -> Path:
        request = _request({**settings, **changes}, QUERIES)
        cache, key = retrieval.corpus_cache(request, encoder or _StubEncoder())
        assert (cache.shard_size, cache.storage) == (key["shard_size"], key["storage"])
        return cache.folder

    base = folder()
    assert base.parent == tmp_path / "dense" and base.name.startswith("beir_nq-")
    assert folder(storage="float32") != base
    assert folder(shard_size=100) != base
    assert folder(_StubEncoder(passage="another passage prompt")) != base
    assert folder(_StubEncoder(query="another query prompt")) == base
    assert folder(query_batch=7, max_batch_tokens=5) == base


class _Rounds:
    """`encode_corpus` as given reports, one per read of the corpus; the last writes the corpus
    (two documents in one shard) so that the cache can be finished."""

    def __init__(self, *reports: encoding_module.EncodingReport) -> None:
        self.reports = list(reports)
        self.totals: list[int] = []

    def __call__(self, cache, documents, total, encoder, rank, world, label):
        self.totals.append(total)
        report = self.reports.pop(0)
        if not self.reports:
            shard = corpus_module.Shard.of(0, [("d1", "one"), ("d2", "two")])
            cache.write_shard(shard, np.eye(2, dtype=np.float32))
        return report


def _corpus_request(settings: dict) -> FirstStageRequest:
    dataset = SimpleNamespace(
        id="stub/ds",
        corpus_id=lambda: "stub-corpus",
        documents_count=lambda: 7,
        iter_documents=lambda: iter(()),
    )
    spec = DatasetSpec("ds", "stub/ds", "en", "x", False, True)
    return FirstStageRequest(
        spec, FirstStageSpec("x", "dense", "dense x", settings=settings), dataset, QUERIES, 10
    )


def test_the_encoding_record_adds_up_every_read_of_the_corpus(stubbed, monkeypatch, capsys):
    """Shards another process claimed and left unwritten take another read of the corpus: the
    record sums the passages encoded and the seconds of both reads, and the waiting for others'
    shards apart; the note says how many shards were taken over."""
    rounds = _Rounds(
        encoding_module.EncodingReport(
            encoded_passages=5, seconds=1.0, waited_seconds=0.5, left_unwritten=[3]
        ),
        encoding_module.EncodingReport(
            shards=1, documents=2, encoded_passages=2, seconds=0.25, waited_seconds=0.25, corpus_sha256="ab"
        ),
    )
    monkeypatch.setattr(encoding_module, "encode_corpus", rounds)
    cache, info, report = stubbed.ensure_corpus(_corpus_request(stubbed.settings_now), _StubEncoder())
    assert report == {"encoded_passages": 7, "encode_seconds": 1.25, "waited_seconds": 0.75}
    assert rounds.totals == [7, 7]
    assert "another process claimed 1 shard and ended without writing it; encoding it here" in (
        capsys.readouterr().err
    )
    assert info == cache.complete() and (info["shards"], info["documents"], info["corpus_sha256"]) == (
        1,
        2,
        "ab",
    )
    # a complete cache is used as it is, with nothing encoded; no waiting is recorded where none was
    assert stubbed.ensure_corpus(_corpus_request(stubbed.settings_now), _StubEncoder())[2] == {
        "encoded_passages": 0,
        "encode_seconds": 0.0,
    }
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(Path(os.environ["RERANK_EVAL_CACHE"]) / "other"))
    monkeypatch.setattr(
        encoding_module, "encode_corpus", _Rounds(encoding_module.EncodingReport(shards=1, documents=2))
    )
    assert stubbed.ensure_corpus(_corpus_request(stubbed.settings_now), _StubEncoder())[2] == {
        "encoded_passages": 0,
        "encode_seconds": 0.0,
    }


def test_a_second_dataset_reuses_the_encoder_only_with_the_same_settings(monkeypatch):
    """One encoder is kept between datasets: reused for the same settings (no reload), rebuilt for
    any other (another encoder's vectors would be searched otherwise)."""
    built: list[dict] = []

    def build(settings):
        built.append(settings)
        return object()

    monkeypatch.setattr(dense_module.DenseRetrieval, "build_encoder", staticmethod(build))
    retrieval = dense_module.DenseRetrieval()
    settings = retrieval.validate("x", {"encoder": "a"})
    first = retrieval.encoder(settings)
    assert retrieval.encoder(dict(settings)) is first and len(built) == 1
    other = retrieval.encoder({**settings, "pooling": "cls"})
    assert other is not first and len(built) == 2
    assert retrieval.encoder(settings) is not other and len(built) == 3


def test_a_run_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(UserError, match=r"^cannot write the dense run .*runs[/\\]x\.trec: "):
        run_cache.write_run(tmp_path / "runs" / "x.trec", {"1": {"d": 1.0}}, {})


def test_the_run_file_is_trec_lines_tagged_as_the_dense_stage(tmp_path):
    path = tmp_path / "runs" / "x.trec"
    run_cache.write_run(path, {"1": {"b": 1.0, "a": 1.0, "c": 2.0}}, {"corpus_documents": 3})
    assert path.read_text().splitlines() == [
        "1 Q0 c 1 2.0 rerank-eval-dense",
        "1 Q0 b 2 1.0 rerank-eval-dense",
        "1 Q0 a 3 1.0 rerank-eval-dense",
    ]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert run_cache.run_corpus(path) == {"corpus_documents": 3, "run_sha256": digest}


# --- models/common.py: device, dtype, attention kernel, batches ------------------------------------


def _cuda_count(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_the_default_device_is_cuda_where_there_is_one(monkeypatch):
    _cuda_count(monkeypatch, 0)
    assert common.pick_device(None) == CPU and common.pick_device("") == CPU
    _cuda_count(monkeypatch, 2)
    assert common.pick_device(None) == CUDA
    assert common.pick_device("cpu") == CPU and common.pick_device(torch.device("cpu")) == CPU


@pytest.mark.parametrize(
    ("count", "device", "message"),
    [
        (0, "cuda", r"^device 'cuda': no CUDA GPU is available here$"),
        (0, "cuda:0", r"^device 'cuda:0': no CUDA GPU is available here$"),
        (2, "cuda:2", r"^device 'cuda:2': there are 2 CUDA GPU\(s\), up to cuda:1$"),
        (1, "gpu", r"^unknown device 'gpu'; use cpu, cuda or cuda:N$"),
        (1, "meta", r"^unsupported device 'meta'; use cpu, cuda or cuda:N$"),
    ],
)
def test_a_device_that_is_not_here_is_one_line(monkeypatch, count, device, message):
    _cuda_count(monkeypatch, count)
    with pytest.raises(UserError, match=message):
        common.pick_device(device)


def test_each_cuda_gpu_there_is_can_be_chosen(monkeypatch):
    _cuda_count(monkeypatch, 2)
    assert common.pick_device("cuda:1") == torch.device("cuda:1")
    assert common.pick_device("cuda:0") == torch.device("cuda:0")
    assert common.pick_device("cuda") == CUDA


def test_mps_is_refused_where_apple_has_none(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^device 'mps': Apple MPS is not available here$"):
        common.pick_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert common.pick_device("mps") == torch.device("mps")


def test_the_default_dtype_is_bfloat16_on_cuda_and_float32_elsewhere():
    """The dtype keys the corpus embeddings and decides every vector's last bits."""
    assert common.pick_dtype(None, CUDA) == torch.bfloat16
    assert common.pick_dtype(None, CPU) == torch.float32
    assert common.pick_dtype(None, torch.device("mps")) == torch.float32
    assert common.pick_dtype(torch.float16, CPU) == torch.float16


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("float32", torch.float32), ("fp32", torch.float32), ("bfloat16", torch.bfloat16),
        ("bf16", torch.bfloat16), ("float16", torch.float16), ("fp16", torch.float16),
    ],
)  # fmt: skip
def test_dtype_names_and_their_short_forms(name, dtype):
    assert common.pick_dtype(name, CUDA) == dtype and common.pick_dtype(name, CPU) == dtype
    assert common.dtype_name(dtype) in ("float32", "bfloat16", "float16")


@pytest.mark.parametrize("name", ["float64", "half", "FP16", ""])
def test_an_unknown_dtype_is_one_line(name):
    with pytest.raises(UserError, match=r"^unknown dtype .*; use float32, bfloat16 or float16$"):
        common.pick_dtype(name, CPU)


def test_flash_attention_only_on_cuda_in_half_precision_when_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # not installed
    assert common.attention_implementation(CUDA, torch.bfloat16) == "sdpa"
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    assert common.attention_implementation(CUDA, torch.bfloat16) == "flash_attention_2"
    assert common.attention_implementation(CUDA, torch.float16) == "flash_attention_2"
    assert common.attention_implementation(CUDA, torch.float32) == "sdpa"
    assert common.attention_implementation(CPU, torch.bfloat16) == "sdpa"


def test_the_default_token_budget_is_larger_on_cuda():
    assert common.default_batch_tokens(CUDA) == 65_536 and common.default_batch_tokens(CPU) == 8_192


def test_token_budget_batches_are_longest_first_within_the_budget():
    """Longest first, equal lengths in input order, each batch's rows × its longest at most the
    budget; a text over the budget alone. (Batch composition moves a vector's last bits.)"""
    lengths = [3, 9, 3, 5, 20, 5, 1]
    batches = common.token_budget_batches(lengths, 10)
    assert batches == [[4], [1], [3, 5], [0, 2, 6]]
    assert common.token_budget_batches(lengths, 9) == [[4], [1], [3], [5], [0, 2, 6]]
    assert common.token_budget_batches(lengths, 18) == [[4], [1, 3], [5, 0, 2], [6]]
    assert common.token_budget_batches([], 10) == []
    assert common.token_budget_batches([2], 1) == [[0]]


# --- the recipe: a Transformer module in a folder of its own, and modules.json's shape -------------


def _in_a_subfolder(folder: Path, name: str = "0_Transformer") -> Path:
    """The checkpoint with its Transformer module (weights, config, tokenizer, sentence_bert_config)
    moved into `name`, as older sentence-transformers saved them."""
    kept = {"modules.json", "config_sentence_transformers.json"}
    (folder / name).mkdir()
    for path in list(folder.iterdir()):
        if path.is_file() and path.name not in kept:
            path.rename(folder / name / path.name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = name
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder / name


def test_a_transformer_in_a_subfolder_gives_its_own_length_case_positions_and_width(tmp_path):
    """Length, lower-casing, the position limit and the vectors' width are the Transformer module's
    (its folder's files), not the checkpoint root's, which has none of them there."""

    folder = dense_checkpoints.build_sentence_transformers(
        tmp_path / "st", pooling="mean", normalize=True, max_seq_length=12, do_lower_case=True
    )
    module = _in_a_subfolder(folder)
    config = json.loads((module / "config.json").read_text())
    positions, width = config["max_position_embeddings"], config["hidden_size"]
    recipe = read_recipe(folder, "st", NO_OVERRIDES)
    assert (recipe.transformer_path, recipe.max_length, recipe.lowercase) == ("0_Transformer", 12, True)
    with pytest.raises(UserError, match=rf"^encoder st: max_length {positions + 1} is beyond the model's"):
        read_recipe(folder, "st", {**NO_OVERRIDES, "max_length": positions + 1})
    with pytest.raises(UserError, match=rf"^encoder st: dimensions {width + 1} is more than its vectors'"):
        read_recipe(folder, "st", {**NO_OVERRIDES, "dimensions": width + 1})
    # without max_seq_length: the module's tokenizer limit, capped at its positions
    (module / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": True}))
    tokenizer = json.loads((module / "tokenizer_config.json").read_text())
    for limit in (positions - 1, positions + 100):
        (module / "tokenizer_config.json").write_text(json.dumps({**tokenizer, "model_max_length": limit}))
        assert read_recipe(folder, "st", NO_OVERRIDES).max_length == min(limit, positions)


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        ({"0": "Transformer"}, r"modules\.json: expected a list of modules$"),
        (["sentence_transformers.models.Transformer"],
         r"modules\.json: module 'sentence_transformers\.models\.Transformer' is not supported "
         r"\(rerank-eval reads Transformer, Pooling, Dense and Normalize\)$"),
        ([{"path": "", "type": "sentence_transformers.models.Transformer"}, {"path": "1_Pooling"}],
         r"modules\.json: module without a type \(\{'path': '1_Pooling'\}\) is not supported"),
    ],
)  # fmt: skip
def test_a_modules_file_of_another_shape_is_one_line(tmp_path, modules, expected):

    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="mean", normalize=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match=expected):
        read_recipe(folder, "st", NO_OVERRIDES)


def test_only_a_normalize_module_or_cosine_makes_unit_vectors(tmp_path):
    """dot similarity and no Normalize module: raw vectors; a Normalize module: unit vectors."""

    for normalize in (False, True):
        folder = dense_checkpoints.build_sentence_transformers(
            tmp_path / f"st-{normalize}", pooling="cls", normalize=normalize, similarity_fn_name="dot"
        )
        assert read_recipe(folder, "st", NO_OVERRIDES).normalize is normalize


def test_a_module_type_without_a_package_path_is_read_by_its_name(tmp_path):
    """`_module_kind` takes the last dotted part; a type given as a bare name is that name."""
    folder = dense_checkpoints.build_sentence_transformers(tmp_path / "st", pooling="cls", normalize=True)
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        module["type"] = module["type"].rsplit(".", 1)[-1]
    (folder / "modules.json").write_text(json.dumps(modules))
    recipe = read_recipe(folder, "st", NO_OVERRIDES)
    assert (recipe.pooling, recipe.normalize, recipe.max_length) == ("cls", True, 16)
