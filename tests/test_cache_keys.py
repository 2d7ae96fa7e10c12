"""Cached work is reused exactly when nothing that changes a score or a candidate changed.

Each test runs a command, then the same command with one input changed, over the same cache, and
reads from the result (or the progress lines) whether cached work was reused: score journals,
built-in BM25 indexes and dense corpus embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from tests import builders
from tests.checkpoints import build_bi_encoder, build_cross_encoder

QUERIES = 2  # judged scifact fixture queries with candidates


def invoke(args: list, cache: Path, monkeypatch) -> object:
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(cache))
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def resumed(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text())["datasets"][0]["timings"]["resumed_queries"]


@pytest.fixture(scope="module")
def journal_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    changed_run = {q: dict(docs) for q, docs in builders.SCIFACT_RUN.items()}
    changed_run["1"]["s5"] = 3.5  # one first-stage score moves, the candidates stay
    # user files merged over the packaged one, replacing its scifact entry (by key) in suite beir
    scifact = "suites:\n  beir:\n    datasets:\n      - {{key: scifact, id: beir/scifact/{split}{extra}}}\n"
    policy = root / "self-matches.yaml"
    policy.write_text(scifact.format(split="test", extra=", drop_self_matches: true"))
    train = root / "train-split.yaml"
    train.write_text(scifact.format(split="train", extra=""))
    return {
        "root": root,
        "run": builders.write_run(root / "scifact.trec", builders.SCIFACT_RUN),
        "changed run": builders.write_run(root / "changed" / "scifact.trec", changed_run),
        "model": build_cross_encoder(root / "ce"),
        "other model": build_cross_encoder(root / "ce-other", seed=3),
        "policy config": policy,
        "train config": train,
    }


def journal_command(setup: dict, out: Path, **change) -> list:
    args = {
        "--model": setup["model"], "--run": f"scifact={setup['run']}", "--candidate-order": "first-stage",
        "--top-k": "100", "--dtype": "float32",
    }  # fmt: skip
    extra = change.pop("extra", [])
    args.update(change)
    return [
        "beir",
        "--datasets",
        "scifact",
        "--out",
        out,
        *(x for pair in args.items() for x in pair),
        *extra,
    ]


VARIANTS = {
    "candidate order": lambda s: {"--candidate-order": "reversed"},
    "top-k": lambda s: {"--top-k": "2"},
    "first-stage run content": lambda s: {"--run": f"scifact={s['changed run']}"},
    "model weights": lambda s: {"--model": s["other model"]},
    "model setting": lambda s: {"extra": ["--set", "max_length=16"]},
    "batching": lambda s: {"extra": ["--set", "max_batch_tokens=64"]},
    "dtype": lambda s: {"--dtype": "bfloat16"},
    "self-match policy": lambda s: {"extra": ["--config", s["policy config"]]},
    # the same key and queries, qrels and run, another ir_datasets id (the fixture's train split)
    "dataset id": lambda s: {"extra": ["--config", s["train config"]]},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_changed_input_never_reuses_journaled_scores(journal_setup, variant, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    invoke(journal_command(journal_setup, tmp_path / "first"), cache, monkeypatch)
    invoke(journal_command(journal_setup, tmp_path / "same"), cache, monkeypatch)
    assert resumed(tmp_path / "same") == QUERIES  # the identical command reuses every score
    invoke(
        journal_command(journal_setup, tmp_path / "changed", **VARIANTS[variant](journal_setup)),
        cache,
        monkeypatch,
    )
    assert resumed(tmp_path / "changed") == 0


def test_another_cpu_thread_count_never_reuses_journaled_scores(journal_setup, tmp_path, monkeypatch):
    """A CPU's float32 sums are split by thread, so a score's last bits follow the count: a run
    resumed with another count (another Slurm allocation) would mix scores of two counts while its
    manifest records one. It scores again instead."""
    import torch

    cache, threads = tmp_path / "cache", torch.get_num_threads()
    invoke(journal_command(journal_setup, tmp_path / "first"), cache, monkeypatch)
    try:
        torch.set_num_threads(threads + 1)
        invoke(journal_command(journal_setup, tmp_path / "changed"), cache, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    assert resumed(tmp_path / "changed") == 0
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("first", "changed")]
    assert [m["torch_threads"] for m in manifests] == [threads, threads + 1]
    invoke(journal_command(journal_setup, tmp_path / "same"), cache, monkeypatch)
    assert resumed(tmp_path / "same") == QUERIES  # the first count's scores are still there


def test_weights_rewritten_in_place_are_scored_again(journal_setup, tmp_path, monkeypatch):
    """The same model path holding other weights (a re-saved checkpoint) never reuses scores."""
    model = build_cross_encoder(tmp_path / "ce")
    setup = {**journal_setup, "model": model}
    invoke(journal_command(setup, tmp_path / "first"), tmp_path / "cache", monkeypatch)
    build_cross_encoder(model, seed=3)
    invoke(journal_command(setup, tmp_path / "changed"), tmp_path / "cache", monkeypatch)
    assert resumed(tmp_path / "changed") == 0


def test_a_new_hub_snapshot_of_the_first_stage_run_is_scored_again(journal_setup, tmp_path, monkeypatch):
    """The packaged first stage (Pyserini's runs on the Hub): when the repository's main moves to
    a commit whose run differs, the journaled scores of the old run are not reused."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    name = "bm25/run.beir-v1.0.0-scifact-flat.trec"

    def run_at(commit: str, run: str, out: str) -> int:
        content = journal_setup[run].read_bytes()
        builders.put_in_hub_cache(hub, "unicamp-dl/beir-runs", "dataset", name, content, commit)
        args = journal_command(journal_setup, tmp_path / out)
        del args[args.index("--run") : args.index("--run") + 2]  # the packaged first stage
        invoke(args, tmp_path / "cache", monkeypatch)
        manifest = json.loads((tmp_path / out / "manifest.json").read_text())
        assert manifest["datasets"][0]["first_stage"]["revision"] == commit
        return resumed(tmp_path / out)

    assert run_at("a" * 40, "run", "first") == 0
    assert run_at("a" * 40, "run", "same") == QUERIES
    assert run_at("b" * 40, "changed run", "changed") == 0


BM25_CONFIG = """
defaults: {{top_k: 3, metrics: [nDCG@10], model: bm25}}
first_stages:
  bm25s: {{kind: bm25s, k1: {k1}, b: {b}}}
suites:
  one:
    datasets:
      - {{key: scifact, id: beir/scifact/test, language: {language}, first_stage: bm25s}}
models:
  bm25: {{family: first-stage-order}}
"""


@pytest.mark.parametrize(
    "change", [{"k1": 1.2}, {"b": 0.75}, {"language": "fr"}], ids=["k1", "b", "analyzer language"]
)
def test_a_changed_bm25_setting_builds_another_index(change, tmp_path, monkeypatch):
    def run(name: str, **values) -> str:
        config = tmp_path / f"{name}.yaml"
        config.write_text(BM25_CONFIG.format(**{"k1": 0.9, "b": 0.4, "language": "en", **values}))
        return invoke(
            ["run", "one", "--config", config, "--out", tmp_path / name], tmp_path / "cache", monkeypatch
        ).output

    assert "building the BM25 index" in run("first")
    assert "building the BM25 index" not in run("same")
    assert "building the BM25 index" in run("changed", **change)


DENSE_CONFIG = """
defaults: {{top_k: 5, model: bm25}}
first_stages:
  tiny: {{kind: dense, encoder: {encoder}, pooling: {pooling}, normalize: {normalize},
         max_length: {max_length}, passage_prefix: {prefix}, shard_size: 50{extra}}}
suites:
  one:
    datasets:
      - {{key: scifact, id: beir/scifact/test, first_stage: tiny}}
models:
  bm25: {{family: first-stage-order}}
"""


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"one": build_bi_encoder(root / "one"), "other": build_bi_encoder(root / "other", seed=4)}


@pytest.mark.parametrize(
    "change",
    [
        {"encoder": "other"},
        {"pooling": "cls"},
        {"normalize": "false"},
        {"max_length": 4},
        {"prefix": "'passage: '"},
        {"extra": ", dimensions: 8"},
    ],
    ids=["encoder", "pooling", "normalisation", "max_length", "passage prefix", "dimensions"],
)
def test_a_changed_encoder_setting_encodes_the_corpus_again(encoders, change, tmp_path, monkeypatch):
    def encoded(name: str, **values) -> int:
        settings = {
            "encoder": "one",
            "pooling": "mean",
            "normalize": "true",
            "max_length": 64,
            "prefix": "''",
            "extra": "",
            **values,
        }
        settings["encoder"] = json.dumps(str(encoders[settings["encoder"]]))
        config = tmp_path / f"{name}.yaml"
        config.write_text(DENSE_CONFIG.format(**settings))
        out = tmp_path / name
        invoke(["run", "one", "--config", config, "--out", out], tmp_path / "cache", monkeypatch)
        record = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]
        return sum(rank.get("encoded_passages", 0) for rank in record["execution"].get("ranks", []))

    assert encoded("first") > 0
    assert encoded("same") == 0
    assert encoded("changed", **change) > 0


def test_a_copied_encoder_folder_reuses_the_run_and_the_embeddings(encoders, tmp_path, monkeypatch):
    """A checkpoint folder is its content: a byte copy elsewhere encodes nothing again and finds the
    same run (its path once sat in the keys, so a moved folder encoded the whole corpus again)."""
    import shutil

    copy = shutil.copytree(encoders["one"], tmp_path / "moved" / "encoder")
    records = []
    for name, folder in (("first", encoders["one"]), ("copy", copy)):
        settings = {"pooling": "mean", "normalize": "true", "max_length": 64, "prefix": "''", "extra": ""}
        config = tmp_path / f"{name}.yaml"
        config.write_text(DENSE_CONFIG.format(encoder=json.dumps(str(folder)), **settings))
        invoke(["run", "one", "--config", config, "--out", tmp_path / name], tmp_path / "cache", monkeypatch)
        records.append(
            json.loads((tmp_path / name / "manifest.json").read_text())["datasets"][0]["first_stage"]
        )
    assert records[1]["execution"]["run_cached"] is True and records[1]["sha256"] == records[0]["sha256"]
    assert [r["settings"]["encoder"]["source"] for r in records] == [str(encoders["one"]), str(copy)]
    assert len(list((tmp_path / "cache" / "dense").glob("*/key.json"))) == 1  # one corpus encoded
