"""Hub and cache paths offline: `fetch`, presets resolved through huggingface_hub's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cache import cache_root
from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.rerankers import load_reranker
from tests import builders
from tests.checkpoints import build_listwise_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_fetch_fills_dataset_and_run_caches(hub_cache, tmp_path):
    run = builders.write_run(tmp_path / "r.trec", builders.SCIFACT_RUN)
    builders.put_in_hub_cache(
        hub_cache,
        "unicamp-dl/beir-runs",
        "dataset",
        "bm25/run.beir-v1.0.0-scifact-flat.trec",
        run.read_bytes(),
    )
    result = CliRunner().invoke(app, ["fetch", "beir", "--datasets", "scifact", "--model", "bm25"])
    assert result.exit_code == 0, result.output
    assert "all files are in their caches" in result.output


def test_fetch_builds_the_builtin_bm25_index(tmp_path):
    result = CliRunner().invoke(app, ["fetch", "miracl", "--languages", "yo", "--first-stage", "bm25s"])
    assert result.exit_code == 0, result.output
    assert any(p.name.startswith("miracl_yo-") for p in (cache_root() / "bm25s").iterdir())


def test_fetch_says_what_is_missing_offline():
    result = CliRunner().invoke(app, ["fetch", "beir", "--datasets", "fiqa"])
    assert result.exit_code == 2
    assert "run.beir-v1.0.0-fiqa-flat.trec is not cached and HF_HUB_OFFLINE is set" in result.output


def test_fetch_without_first_stage_fetches_the_dataset_only():
    """For runs that bring their own run files: fiqa's published run is not cached, and not asked."""
    result = CliRunner().invoke(app, ["fetch", "beir", "--datasets", "fiqa", "--no-first-stage"])
    assert result.exit_code == 0, result.output
    assert "all files are in their caches" in result.output
    both = CliRunner().invoke(app, ["fetch", "beir", "--no-first-stage", "--first-stage", "bm25s"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_default_preset_offline_without_cache_is_one_clear_error():
    with pytest.raises(
        UserError, match="model jinaai/jina-reranker-v3 is not cached and HF_HUB_OFFLINE is set"
    ):
        load_reranker("jina-reranker-v3")


def test_preset_loads_from_the_hub_cache_and_records_revision(hub_cache, tmp_path):
    folder = build_listwise_checkpoint(tmp_path / "ck")
    for path in folder.iterdir():
        builders.put_in_hub_cache(hub_cache, "jinaai/jina-reranker-v3", "model", path.name, path.read_bytes())
    reranker = load_reranker("jina-reranker-v3")
    description = reranker.describe()
    assert description["source"] == "jinaai/jina-reranker-v3"
    assert description["revision"] == COMMIT
    assert description["settings"]["max_query_length"] == 512
    local = load_reranker(str(folder))
    docs = ["aspirin and the heart", "bones"]
    assert reranker.score("aspirin", docs) == pytest.approx(local.score("aspirin", docs), abs=1e-6)
    assert Path(reranker.checkpoint.folder).name == COMMIT
