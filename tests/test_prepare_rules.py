"""Rules of dataset preparation and of the offline check (rerank_eval/pipeline/prepare.py,
offline.py) that a mutation round found unchecked: what rank 0 fetches before the other ranks of a
torchrun job, that the offline probes only look things up, which models count as downloaded, and
that a run without internet names everything missing at once, whatever problem comes first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.errors import MissingDownload, UserError
from rerank_eval.first_stage import RunLocation
from rerank_eval.pipeline import offline, prepare
from rerank_eval.pipeline.plan import CandidateOrder, RunPlan
from tests import builders


@pytest.fixture(scope="module")
def packaged():
    return load_config(None)


def _plan(config, keys: list[str], runs: RunLocation | None = None) -> RunPlan:
    suite = config.suite("beir")
    return RunPlan(
        config, suite, suite.select(keys), 10, ["nDCG@10"], CandidateOrder.parse("first-stage"),
        runs or RunLocation(),
    )  # fmt: skip


def _recorded_fetches(monkeypatch, module) -> list:
    asked = []
    monkeypatch.setattr(
        module, "fetch_first_stage", lambda request, build=True: asked.append((request, build))
    )
    return asked


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_rank_zero_fetches_the_first_stage_without_building_and_none_for_a_users_run(
    packaged, monkeypatch, tmp_path
):
    """Under torchrun, rank 0 downloads alone while the others wait; work the ranks share (a dense
    corpus encoding) is not done there, and a dataset whose run file the user gives has no first
    stage to fetch at all."""
    asked = _recorded_fetches(monkeypatch, prepare)
    plan = _plan(packaged, ["scifact"])
    (spec,) = plan.datasets
    prepare.fetch_for_ranks(plan, spec)
    assert [(request.spec.key, request.source, build) for request, build in asked] == [
        ("scifact", plan.first_stage_of(spec), False)
    ]
    (request, _), dataset = asked[0], prepare.open_dataset(spec)
    assert request.dataset.identity() == dataset.identity() and request.queries == dataset.queries()
    asked.clear()
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    prepare.fetch_for_ranks(_plan(packaged, ["scifact"], RunLocation({"scifact": run_file})), spec)
    assert asked == []


def test_the_offline_first_stage_probe_only_looks_up(packaged, monkeypatch):
    """The check before an offline run looks each download up; it builds nothing (a dense first
    stage would encode a whole corpus inside a check whose refusals it then ignores)."""
    asked = _recorded_fetches(monkeypatch, offline)
    plan = _plan(packaged, ["scifact"])
    offline._first_stage_probe(plan, plan.datasets[0])
    assert [build for _, build in asked] == [False]


def test_only_models_whose_files_are_not_here_count_as_downloads(packaged, tmp_path):
    """A Hub id downloads; a checkpoint folder given as the model, and a preset without model files
    (bm25 keeps the first-stage order), download nothing and are not looked up offline."""
    folder = tmp_path / "my-checkpoint"
    folder.mkdir()
    assert packaged.models["bm25"].model is None  # (what makes bm25 a preset without files)
    names = ["org/a-hub-reranker", str(folder), "bm25"]
    assert offline._downloaded_models(_plan(packaged, ["scifact"]), names) == ["org/a-hub-reranker"]


def test_a_probe_refused_for_another_reason_does_not_hide_later_missing_files(packaged, monkeypatch):
    """Problems other than a missing download are left for the run to say; the probes after one
    still run, so the one line names every missing file."""
    missing = MissingDownload("no copy of x", "model x", "/cache", "HF_HOME")

    def refused():
        raise UserError("a problem the run says itself")

    def absent():
        raise missing

    monkeypatch.setattr(offline, "_probes", lambda plan, models: [refused, absent])
    assert offline.missing_downloads(_plan(packaged, ["scifact"]), ["x"]) == [missing]


@pytest.mark.usefixtures("offline")  # (conftest's: no download host resolves)
def test_a_one_dataset_one_model_offline_run_names_everything_missing(packaged, tmp_path, monkeypatch):
    """One dataset and one model skip the check before any work (the model loads first), but when
    the model turns out missing the line still names the dataset and its run file too, not the
    first miss alone."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(constants.HF_HOME) / tmp_path.name))
    result = CliRunner().invoke(app, ["beir", "--datasets", "nfcorpus", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    model = packaged.models[packaged.default_model].model  # what a run without --model reranks with
    plan = _plan(packaged, ["nfcorpus"])
    (spec,) = plan.datasets
    run_file = plan.first_stage_of(spec).settings["file"].format(name=spec.key)
    assert line.startswith(f"error: without internet, missing: model {model}; "), line
    assert f"dataset {spec.ir_datasets_id}" in line and run_file in line, line
    assert os.environ["IR_DATASETS_HOME"] in line and not (tmp_path / "out").exists()


def test_a_dataset_without_judgements_is_refused_in_one_line_naming_it(packaged, monkeypatch, tmp_path):
    """Without qrels every measure would be 0 (or nothing): the run stops, saying which dataset
    (where it comes from), and writes nothing."""
    from rerank_eval.datasets.ir_dataset import IrDataset

    monkeypatch.setattr(IrDataset, "qrels", lambda self: {})
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    out = tmp_path / "out"
    args = ["beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run_file}", "--out", out]
    result = CliRunner().invoke(app, [str(a) for a in args])
    (spec,) = _plan(packaged, ["scifact"]).datasets
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"error: {spec.origin} has no relevance judgements"
    assert "Traceback" not in result.output and not out.exists()


def test_a_first_stage_that_ran_as_configured_records_no_fallback(hub_cache, packaged, tmp_path):
    """The manifest says a first stage fell back only where another one replaced the configured one;
    scifact's own published run, used as configured, is no fallback."""
    (spec,) = _plan(packaged, ["scifact"]).datasets
    source = packaged.first_stage_for(spec, None, {})
    run_file = builders.write_run(tmp_path / "r.trec", builders.SCIFACT_RUN)
    filename = source.settings["file"].format(name=spec.key)
    repo, repo_type = source.settings["repo"], source.settings["repo_type"]
    builders.put_in_hub_cache(hub_cache, repo, repo_type, filename, run_file.read_bytes())
    out = tmp_path / "out"
    result = _cli("beir", "--datasets", "scifact", "--model", "bm25", "--out", out)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["datasets"][0]["first_stage"]
    assert (record["name"], record["fallback_from"]) == (spec.first_stage, None)


def test_only_empty_candidate_documents_are_counted_as_empty(tmp_path):
    """The manifest's empty_documents (and the warning) count the candidates whose text is empty or
    whitespace, not the others."""
    run = {"1": {"s9": 3.0, "s1": 2.0, "s3": 1.0}}
    empty = sum(1 for doc in run["1"] if not " ".join(builders.SCIFACT_DOCS[doc]).strip())
    assert 0 < empty < len(run["1"]) - empty  # (the two counts differ)
    run_file = builders.write_run(tmp_path / "r.trec", run)
    out = tmp_path / "out"
    result = _cli(
        "beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run_file}", "--out", out
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["datasets"][0]["empty_documents"] == empty
    assert f"warning: {empty} candidate documents of scifact are empty or whitespace only" in result.output


def test_a_run_sharing_no_query_with_the_qrels_is_refused_naming_its_dataset(tmp_path):
    """The refusal says which dataset's run is at fault (a run of several datasets has several)."""
    run_file = builders.write_run(tmp_path / "other.trec", {"999": {"f1": 1.0}})
    out = tmp_path / "never"
    result = _cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={run_file}", "--out", out)
    assert result.exit_code == 2 and not out.exists()
    assert "error: the first-stage run for fiqa shares no query with its qrels" in result.output


@pytest.mark.parametrize(("world", "online"), [(1, True), (2, False)])
def test_the_check_before_any_work_probes_only_a_single_process_without_internet(
    packaged, monkeypatch, world, online
):
    """With internet the lookups would download instead of failing, and a torchrun job's ranks
    would probe side by side: a run of several datasets then goes on without the check."""
    from rerank_eval.runtime import distributed

    probed = []
    monkeypatch.setattr(distributed, "ranks", lambda: distributed.Ranks(0, world, 0))
    monkeypatch.setattr(offline, "internet_unreachable", lambda: not online)
    monkeypatch.setattr(offline, "missing_downloads", lambda plan, models: probed.append(models) or [])
    offline.refuse_what_is_missing(_plan(packaged, ["scifact", "fiqa"]), ["bm25"])
    assert probed == []


@pytest.mark.parametrize(
    ("world", "rank", "expected"),
    [(1, 0, ["prepare"]), (2, 0, ["fetch", "barrier", "prepare"]), (2, 1, ["barrier", "prepare"])],
)
def test_under_torchrun_rank_zero_fetches_before_the_other_ranks_prepare(
    packaged, monkeypatch, world, rank, expected
):
    """Downloads and builds are rank 0's alone, done while the other ranks wait at the barrier (two
    processes writing one cache would corrupt it); a single process just prepares."""

    class Shard:
        def __init__(self):
            self.world, self.is_main = world, rank == 0

        def barrier(self):
            done.append("barrier")

    done = []
    plan = _plan(packaged, ["scifact"])
    (spec,) = plan.datasets
    monkeypatch.setattr(prepare, "ranks", Shard)
    monkeypatch.setattr(
        prepare, "fetch_for_ranks", lambda p, s: done.append("fetch") if (p, s) == (plan, spec) else 0
    )
    monkeypatch.setattr(prepare, "prepare_dataset", lambda p, s: done.append("prepare") or (p, s))
    assert prepare.DatasetCache(plan).prepared(spec) == (plan, spec)
    assert done == expected
