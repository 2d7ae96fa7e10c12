"""jina-reranker-v3.5 as a preset of the listwise family: a tiny checkpoint in its layout (sliding-
window layers in the config, v3's special tokens and projector) scores end to end, its prompt is
the documented one byte for byte, the query counts once in a block's capacity (an explicit,
recorded setting), and the batched path equals a one-block-at-a-time implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.rerankers import load_reranker
from rerank_eval.rerankers.listwise.procedure import plan_blocks
from tests import builders
from tests.checkpoints import build_listwise_checkpoint
from tests.test_listwise import reference_scores, spec_prompt

LAYERS = ["sliding_attention", "sliding_attention", "full_attention"]


@pytest.fixture(scope="module")
def v35(tmp_path_factory) -> Path:
    """v3.5's layout: a Qwen3 backbone whose config names sliding-window layers (a window of 8
    tokens here, so that it changes what the last layer sees), JinaForRanking, the projector."""
    folder = tmp_path_factory.mktemp("v35") / "ck"
    return build_listwise_checkpoint(
        folder, model_max_length=400, layers=3, layer_types=LAYERS, sliding_window=8
    )


def test_the_preset_is_the_listwise_family_with_v35_parameters():
    preset = load_config().models["jina-reranker-v3.5"]
    assert preset.family == "listwise-last-token" and preset.model == "jinaai/jina-reranker-v3.5"
    assert preset.settings == {
        "max_query_length": 1984, "max_doc_length": 8191, "block_size": 125, "block_query_copies": 1,
    }  # fmt: skip
    assert preset.unverified  # shown by `rerank-eval models` until the Hub's own code is read


def test_the_checkpoint_layout_is_detected_and_its_sliding_layers_kept(v35):
    config = json.loads((v35 / "config.json").read_text())
    assert config["architectures"] == ["JinaForRanking"] and config["layer_types"] == LAYERS
    reranker = load_reranker(str(v35))  # a JinaForRanking directory needs no --family
    assert reranker.family == "listwise-last-token"
    assert reranker.backbone.config.sliding_window == 8
    assert list(reranker.backbone.config.layer_types) == LAYERS


def test_the_prompt_is_the_documented_one_byte_for_byte(v35):
    reranker = load_reranker(str(v35), block_query_copies=1, max_query_length=24, max_doc_length=40)
    docs = ["a first passage", 'a "second" one\nover two lines']
    assert reranker.block_prompts("what is it", docs) == [spec_prompt("what is it", docs)]


def test_counting_the_query_once_changes_the_blocks():
    """The setting decides block boundaries: with a 240-token context, a 30-token query and 50-token
    documents, two copies leave 180 - 100 = 80 <= 80 after two documents (the block closes), one
    copy leaves 210 - 100 = 110 (room for a third: 60 <= 80 closes it)."""
    lengths = [50, 50, 50, 50]
    assert plan_blocks(lengths, 30, 240, 80, 125, query_copies=2) == [range(0, 2), range(2, 4)]
    assert plan_blocks(lengths, 30, 240, 80, 125, query_copies=1) == [range(0, 3), range(3, 4)]


@pytest.mark.parametrize("copies", [1, 2])
def test_batched_scores_equal_one_block_at_a_time(v35, copies):
    query = "which passage talks about vitamin d and bones"
    docs = [
        f"passage {i} about {'vitamin d and bones' if i % 3 == 0 else 'something else entirely'} "
        + "filler words " * (i % 5)
        for i in range(14)
    ]
    settings = {"max_query_length": 24, "max_doc_length": 40, "block_size": 125, "block_query_copies": copies}
    reranker = load_reranker(str(v35), **settings)
    assert len(reranker.block_prompts(query, docs)) > 1  # several blocks, merged
    expected = reference_scores(v35, query, docs, max_query=24, max_doc=40, query_copies=copies)
    assert np.abs(np.array(reranker.score(query, docs)) - expected).max() <= 1e-5
    assert reranker.describe()["settings"]["block_query_copies"] == copies  # recorded, and keyed


def test_v3_and_v35_side_by_side_in_one_table(v35, tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    v3 = build_listwise_checkpoint(tmp_path / "v3", seed=1)
    for repo, folder in (("jinaai/jina-reranker-v3", v3), ("jinaai/jina-reranker-v3.5", v35)):
        for path in folder.iterdir():
            builders.put_in_hub_cache(hub, repo, "model", path.name, path.read_bytes())
    run = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["beir", "--datasets", "scifact", "--model", "jina-reranker-v3", "--model", "jina-reranker-v3.5",
         "--run", f"scifact={run}", "--top-k", "3", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "jina-reranker-v3.5" in line)
    assert "jina-reranker-v3 " in header or "jina-reranker-v3│" in header.replace(" ", "")
    for name in ("jina-reranker-v3", "jina-reranker-v3.5"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["model"]["settings"]["block_query_copies"] == (1 if name.endswith("3.5") else 2)
        assert ("unverified" in manifest["model"]) == name.endswith("3.5")


def test_the_sliding_window_is_honoured(v35, tmp_path):
    """The same weights without sliding-window layers score otherwise: the window (8 tokens) is
    applied, by our path and by the reference alike (they agree above)."""
    full = build_listwise_checkpoint(tmp_path / "full", model_max_length=400, layers=3)
    settings = {"max_query_length": 24, "max_doc_length": 40, "block_query_copies": 1}
    docs = ["vitamin d keeps bones strong " * 3, "the weather is sunny today " * 3]
    windowed = load_reranker(str(v35), **settings).score("vitamin d and bones", docs)
    unwindowed = load_reranker(str(full), **settings).score("vitamin d and bones", docs)
    assert np.abs(np.array(windowed) - np.array(unwindowed)).max() > 1e-4


def test_the_published_figures_average_to_the_published_averages():
    """The paper's per-dataset and per-language figures, as transcribed, give its two averages."""
    data = json.loads(
        (Path(__file__).resolve().parents[1] / "rerank_eval/published/jina-reranker-v3.5.json").read_text()
    )
    rows, averages = data["rows"]["nDCG@10"], data["averages"]["nDCG@10"]
    beir = [d.key for d in load_config().suite("beir").datasets if d.in_average]
    miracl = [d.key for d in load_config().suite("miracl").datasets]
    assert round(np.mean([rows[k] for k in beir]), 4) == averages["BEIR-13"]
    assert round(np.mean([rows[k] for k in miracl]), 4) == averages["MIRACL-18"]
    assert "jina-embeddings-v5-text-small" in data["first_stage"]
    published = Path(__file__).resolve().parents[1] / "results/published/jina-reranker-v3.5.json"
    assert json.loads(published.read_text()) == data


def test_compare_advises_a_first_stage_only_where_one_is_configured():
    from rerank_eval.reporting.compare.published import same_candidates_advice

    assert same_candidates_advice("jina-embeddings-v3").startswith(
        "rerun with --first-stage jina-embeddings-v3"
    )
    assert same_candidates_advice("jina-embeddings-v5-text-small").startswith("no packaged first stage")
