"""End to end: `rerank-eval beir/miracl/run/export` on fixture datasets read by the real ir_datasets.

Expected metric values are computed in the tests themselves (tests/expected.py), never read back
from the tool.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import rerank_eval
from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.config.schema import DEFAULT_CONFIG
from rerank_eval.errors import UserError
from rerank_eval.reporting.report import Report, report_table
from rerank_eval.results.folder import load_result
from tests import builders
from tests.expected import first_stage_ndcg, first_stage_recall, mean, ndcg, trec_ranking

runner = CliRunner()
BEIR_FIXTURES = "scifact,fiqa,arguana,cqadupstack-android,cqadupstack-english"


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    builders.write_run(folder / "scifact.trec", builders.SCIFACT_RUN)
    builders.write_run(folder / "fiqa.trec", builders.FIQA_RUN)
    builders.write_run(folder / "arguana.trec", builders.ARGUANA_RUN)
    for forum, data in builders.CQA.items():
        builders.write_run(folder / f"cqadupstack-{forum}.trec", data["run"])
    return folder


@pytest.fixture(scope="module")
def bm25_result(runs_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "bm25"
    result = cli(
        "beir",
        "--datasets",
        BEIR_FIXTURES,
        "--model",
        "bm25",
        "--runs-dir",
        runs_dir,
        "--top-k",
        "3",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out


def table_cells(output: str) -> dict[str, list[str]]:
    """The printed table's body rows, by their first cell: every other cell, stripped."""
    rows = [line.split("│")[1:-1] for line in output.splitlines() if line.startswith("│ ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def summary_value(folder: Path, dataset: str, stage: str = "reranked", measure: str = "nDCG@10") -> float:
    summary = pd.read_csv(folder / "summary.csv")
    row = summary[(summary.dataset == dataset) & (summary.measure == measure)]
    assert len(row) == 1, f"no single summary row for {dataset}"
    return float(row.iloc[0][stage])


def expected_fixture_values(top_k: int) -> dict[str, float]:
    cqa = {
        forum: mean(first_stage_ndcg(data["run"], data["qrels"], top_k).values())
        for forum, data in builders.CQA.items()
    }
    return {
        "scifact": mean(first_stage_ndcg(builders.SCIFACT_RUN, builders.SCIFACT_QRELS, top_k).values()),
        "fiqa": mean(first_stage_ndcg(builders.FIQA_RUN, builders.FIQA_QRELS, top_k).values()),
        "arguana": mean(
            first_stage_ndcg(builders.ARGUANA_RUN, builders.ARGUANA_QRELS, top_k, drop_self=True).values()
        ),
        "cqadupstack": mean(cqa.values()),
    }


def test_first_stage_and_identity_rerank_match_hand_computed_ndcg(bm25_result):
    expected = expected_fixture_values(top_k=3)
    for dataset, value in expected.items():
        assert summary_value(bm25_result, dataset, "first_stage") == pytest.approx(value, abs=1e-6)
        assert summary_value(bm25_result, dataset, "reranked") == pytest.approx(value, abs=1e-6)
    # Scifact's query 3 is judged but not in the run: it counts, with 0.
    q1 = ndcg(["s2", "s3", "s1"], builders.SCIFACT_QRELS["1"])  # the 4.0 tie goes to s3 (id desc)
    q2 = ndcg(["s1", "s4", "s8"], builders.SCIFACT_QRELS["2"])
    assert expected["scifact"] == pytest.approx((q1 + q2 + 0.0) / 3)


def test_suite_averages_label_subset_and_all_rows(bm25_result):
    expected = expected_fixture_values(top_k=3)
    headline = mean([expected["scifact"], expected["fiqa"], expected["arguana"]])
    assert summary_value(bm25_result, "BEIR-13 subset (3 of 13)") == pytest.approx(headline, abs=1e-6)
    assert summary_value(bm25_result, "Average, all 4 rows") == pytest.approx(
        mean(expected.values()), abs=1e-6
    )


def test_self_matches_are_dropped_only_where_configured(runs_dir, tmp_path):
    assert load_config().suite("beir").select(["arguana"])[0].drop_self_matches
    config = tmp_path / "bench.yaml"  # merged over the packaged file: arguana's entry replaced
    config.write_text("suites:\n  beir:\n    datasets:\n      - {key: arguana, id: beir/arguana}\n")
    out = tmp_path / "keep-self"
    result = cli(
        "beir",
        "--config",
        config,
        "--datasets",
        "arguana",
        "--model",
        "bm25",
        "--runs-dir",
        runs_dir,
        "--top-k",
        "3",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    kept = mean(first_stage_ndcg(builders.ARGUANA_RUN, builders.ARGUANA_QRELS, 3, drop_self=False).values())
    assert summary_value(out, "arguana") == pytest.approx(kept, abs=1e-6)
    assert kept != pytest.approx(expected_fixture_values(3)["arguana"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["datasets"][0]["drop_self_matches"] is False
    assert manifest["datasets"][0]["coverage"]["self_matches_dropped"] == 0


def test_top_k_cut(runs_dir, tmp_path):
    out = tmp_path / "top1"
    result = cli(
        "beir",
        "--datasets",
        "scifact",
        "--model",
        "bm25",
        "--runs-dir",
        runs_dir,
        "--top-k",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert summary_value(out, "scifact") == pytest.approx(expected_fixture_values(1)["scifact"], abs=1e-9)
    lines = (out / "runs" / "scifact.trec").read_text().splitlines()
    assert [line.split()[:3] for line in lines] == [["1", "Q0", "s2"], ["2", "Q0", "s1"]]


def test_reranked_run_scores_strictly_decrease(bm25_result):
    manifest = json.loads((bm25_result / "manifest.json").read_text())
    # the pass-through writes first-stage scores, and scifact's query 1 has two equal ones: ties occur
    assert {d["key"]: d["tied_scores"] for d in manifest["datasets"]}["scifact"] == 1
    for path in (bm25_result / "runs").glob("*.trec"):
        if path.name.endswith(".first-stage.trec"):
            continue  # the first stage's own scores, ties included
        by_query: dict[str, list[float]] = {}
        for line in path.read_text().splitlines():
            query_id, _, _, _, score, _ = line.split()
            by_query.setdefault(query_id, []).append(float(score))
        for scores in by_query.values():
            assert all(a > b for a, b in itertools.pairwise(scores)), path


def test_the_recorded_source_commit_says_when_the_code_that_ran_is_not_the_commit(tmp_path):
    """A manifest named the checkout's commit as the run ended, and nothing of uncommitted edits:
    a commit made during a run, or edited code, was recorded as what ran. The commit is read once
    (as a run starts) and marked `+modified` where tracked files of the source differ from it."""
    import subprocess

    from rerank_eval.results.provenance import source_revision

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = git("rev-parse", "HEAD").strip()
    read = source_revision.__wrapped__
    assert read(tmp_path) == source_revision(tmp_path) == commit  # as the run starts
    (tmp_path / "notes.txt").write_text("untracked files are no code that ran\n")
    assert read(tmp_path) == commit
    (tmp_path / "code.py").write_text("x = 2\n")
    assert read(tmp_path) == commit + "+modified"
    assert source_revision(tmp_path) == commit  # what ran: read once, when it started


def test_manifest_records_protocol_and_sources(bm25_result, runs_dir):
    manifest = json.loads((bm25_result / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["protocol"]["top_k"] == 3
    assert manifest["protocol"]["metrics"] == ["nDCG@10"]
    assert manifest["protocol"]["candidate_order"] == "first-stage"
    assert manifest["packages"]["ir_datasets"] and manifest["packages"]["ir_measures"]
    assert manifest["rerank_eval"]["version"]
    assert manifest["python"] == platform.python_version()
    head = subprocess.run(  # the checkout's commit, where the code runs from one
        ["git", "-C", str(Path(rerank_eval.__file__).resolve().parent), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    recorded = manifest["rerank_eval"]["git"]
    assert (recorded or "").split("+")[0] == (head.stdout.strip() if head.returncode == 0 else "")
    assert manifest["suite"]["config"] == str(DEFAULT_CONFIG)  # no --config: the packaged file
    assert manifest["protocol"]["first_stage_override"] is None  # each entry's own first stage
    import torch

    assert manifest["torch_threads"] == torch.get_num_threads() >= 1  # the run was in this process
    assert manifest["model"]["name"] == "bm25"
    assert "position" not in manifest["model"]  # one model's run: no place among several to keep
    records = {d["key"]: d for d in manifest["datasets"]}
    scifact = records["scifact"]
    run_bytes = (runs_dir / "scifact.trec").read_bytes()
    assert scifact["first_stage"]["sha256"] == hashlib.sha256(run_bytes).hexdigest()
    assert scifact["ir_datasets_id"] == "beir/scifact/test"
    assert scifact["coverage"] == {
        "judged_queries": 3,
        "queries_with_candidates": 2,
        "queries_without_run": 1,
        "self_matches_dropped": 0,
        "run_queries_without_judgements": 1,
        "queries_with_equal_scores": 0,
    }
    assert records["arguana"]["coverage"]["self_matches_dropped"] == 2
    assert records["cqadupstack-android"]["row"] == "cqadupstack"
    assert manifest["started"] <= manifest["finished"]


def trec_lines(path: Path) -> dict[str, list[tuple[str, float]]]:
    by_query: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        query_id, _, doc_id, _, score, _ = line.split()
        by_query.setdefault(query_id, []).append((doc_id, float(score)))
    return by_query


FIXTURE_RUNS = {
    "scifact": (builders.SCIFACT_RUN, builders.SCIFACT_QRELS, False),
    "fiqa": (builders.FIQA_RUN, builders.FIQA_QRELS, False),
    "arguana": (builders.ARGUANA_RUN, builders.ARGUANA_QRELS, True),
}


@pytest.mark.parametrize("key", FIXTURE_RUNS)
def test_first_stage_run_is_kept_with_its_scores_and_bm25_writes_them(bm25_result, key):
    """runs/KEY.first-stage.trec: the candidates as used (self-matches dropped, top 3) with the run
    file's own scores; the bm25 pass-through ranks them alike with the same scores, a tied one
    lowered by the least amount (the documented tie rule) so that trec_eval keeps the order."""
    run, qrels, drop_self = FIXTURE_RUNS[key]
    expected = {}
    for query_id in qrels:
        ranking = [d for d in trec_ranking(run.get(query_id, {})) if not (drop_self and d == query_id)][:3]
        if ranking:
            expected[query_id] = [(d, run[query_id][d]) for d in ranking]
    assert trec_lines(bm25_result / "runs" / f"{key}.first-stage.trec") == expected
    passed_through = trec_lines(bm25_result / "runs" / f"{key}.trec")
    assert passed_through.keys() == expected.keys()
    for query_id, ranked in expected.items():
        written = passed_through[query_id]
        assert [d for d, _ in written] == [d for d, _ in ranked]
        for (_, score), (_, first_stage), previous in zip(written, ranked, [None, *ranked]):
            tied = previous is not None and previous[1] == first_stage
            assert score == first_stage if not tied else first_stage - 1e-12 < score < first_stage
    # each run is tagged with what ranked it: the first stage (here --runs-dir's files, which have
    # no entry's name, so their kind), and the model
    for name, tag in ((f"{key}.first-stage", "run-file"), (key, "bm25")):
        lines = (bm25_result / "runs" / f"{name}.trec").read_text().splitlines()
        assert {line.split()[5] for line in lines} == {tag}, name


def test_manifest_records_the_config_content_and_every_run_file_hash(bm25_result):
    from rerank_eval.config.schema import DEFAULT_CONFIG

    manifest = json.loads((bm25_result / "manifest.json").read_text())
    suite = manifest["suite"]
    assert suite["config_sha256"] == hashlib.sha256(DEFAULT_CONFIG.read_bytes()).hexdigest()
    entries = {entry["key"]: entry for entry in suite["entries"]}
    assert sorted(entries) == sorted(BEIR_FIXTURES.split(","))  # in suite order
    assert entries["arguana"]["ir_datasets_id"] == "beir/arguana" and entries["arguana"]["drop_self_matches"]
    # the entries' bm25-flat did not run: every dataset's run file came from --runs-dir
    assert {entry["first_stage"] for entry in entries.values()} == {"bm25-flat"}
    assert suite["first_stages"] == {}
    files = sorted(p.relative_to(bm25_result).as_posix() for p in (bm25_result / "runs").iterdir())
    assert sorted(manifest["run_sha256"]) == files
    for name, digest in manifest["run_sha256"].items():
        assert hashlib.sha256((bm25_result / name).read_bytes()).hexdigest() == digest


def test_export_and_compare_read_folders_written_before_these_records(bm25_result, tmp_path):
    """A folder from an earlier version: no run hashes, config record, chunking, first-stage runs."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(bm25_result, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["run_sha256"]
    for key in ("config_sha256", "entries", "first_stages"):
        del manifest["suite"][key]
    for key in ("queries_per_chunk", "batching"):
        del manifest["model"][key]
    (old / "manifest.json").write_text(json.dumps(manifest))
    for path in (old / "runs").glob("*.first-stage.trec"):
        path.unlink()
    exported = [
        cli("export", folder, "--csv", tmp_path / f"{folder.name}.csv") for folder in (old, bm25_result)
    ]
    assert all(result.exit_code == 0 for result in exported)
    assert (tmp_path / "old.csv").read_bytes() == (tmp_path / "bm25.csv").read_bytes()
    compared = cli("compare", old, bm25_result)
    assert compared.exit_code == 0, compared.output


def test_per_query_values_cover_every_judged_query(bm25_result):
    per_query = pd.read_csv(bm25_result / "per_query.csv", dtype={"query_id": str})
    scifact = per_query[(per_query.dataset == "scifact") & (per_query.measure == "nDCG@10")]
    assert sorted(scifact[scifact.stage == "reranked"].query_id) == ["1", "2", "3"]
    assert float(scifact[(scifact.stage == "reranked") & (scifact.query_id == "3")].value.iloc[0]) == 0.0


def test_export_reproduces_table_and_summary(bm25_result, tmp_path):
    csv_path = tmp_path / "summary.csv"
    result = cli("export", bm25_result, "--csv", csv_path)
    assert result.exit_code == 0, result.output
    # the folder's summary.csv, each line led by the model and suite (which the folder's manifest holds)
    header, *lines = (bm25_result / "summary.csv").read_text().splitlines(keepends=True)
    labelled = ["model,suite," + header, *("bm25,beir," + line for line in lines)]
    assert csv_path.read_text() == "".join(labelled)
    assert "BEIR-13 subset (3 of 13)" in result.output
    assert "cqadupstack" in result.output


def test_run_table_equals_export_table(runs_dir, tmp_path):
    out = tmp_path / "again"
    run = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", runs_dir, "--out", out)
    export = cli("export", out)
    assert run.exit_code == export.exit_code == 0
    assert export.output.strip() in run.output


def test_seconds_are_said_to_leave_out_scores_from_the_journal(runs_dir, tmp_path, monkeypatch):
    """A second run of the same command takes every score from the journal: its Seconds are no
    scoring time, and the caption says so, with how many queries per dataset; of the bm25 preset,
    which scores nothing (it journals the first stage's order), it says nothing."""
    import dataclasses

    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))  # no other test's journal
    args = ("beir", "--datasets", "fiqa,scifact", "--model", "bm25", "--runs-dir", runs_dir)
    first = cli(*args, "--out", tmp_path / "first")
    assert first.exit_code == 0, first.output
    assert "score journal" not in first.output
    again = cli(*args, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert "score journal" not in again.output + cli("export", tmp_path / "again").output
    assert "bm25 (first-stage order, no reranker) on beir (top-100)" in again.output
    saved = load_result(tmp_path / "again")
    assert saved.manifest.model.family == "first-stage-order"
    model = dataclasses.replace(saved.manifest.model, family="cross-encoder")  # as if a model had scored
    caption = Report(dataclasses.replace(saved.manifest, model=model), saved.per_query).caption()
    note = ("Seconds time this run's scoring, not the scores it took from the score journal "
            "(queries: fiqa 2, scifact 2).")  # fmt: skip
    assert note in " ".join(" ".join(caption).split())


def test_the_first_stage_preset_is_bm25s_twin_under_a_name_for_any_first_stage(runs_dir, tmp_path):
    """`--model first-stage` keeps the first stage's order as `--model bm25` does (a dense first
    stage or a user's run file is not BM25, which the bm25 preset's name made runs read as): the
    same values, named for what the run is."""
    outputs, saved = {}, {}
    for name in ("bm25", "first-stage"):
        out = tmp_path / name
        result = cli("beir", "--datasets", "fiqa", "--model", name, "--runs-dir", runs_dir, "--out", out)
        assert result.exit_code == 0, result.output
        outputs[name], saved[name] = result.output, load_result(out)
    assert "first-stage (first-stage order, no reranker) on beir (top-100)" in outputs["first-stage"]
    assert saved["first-stage"].manifest.model.name == "first-stage"
    assert saved["first-stage"].manifest.model.family == saved["bm25"].manifest.model.family
    pd.testing.assert_frame_equal(saved["first-stage"].per_query, saved["bm25"].per_query)


def test_datasets_given_twice_are_both_run(runs_dir, tmp_path):
    """`-d fiqa -d scifact` runs both (once only the last was run, without a word)."""
    out = tmp_path / "both"
    result = cli(
        "beir", "-d", "fiqa", "--datasets", "scifact", "--model", "bm25", "--runs-dir", runs_dir, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert [d["key"] for d in json.loads((out / "manifest.json").read_text())["datasets"]] == [
        "fiqa",
        "scifact",
    ]


def test_export_refuses_incomplete_folder(tmp_path):
    folder = tmp_path / "x.incomplete"
    folder.mkdir()
    result = cli("export", folder)
    assert result.exit_code == 2
    assert "incomplete" in result.output


def test_published_run_from_hub_cache_and_reference_check(hub_cache, tmp_path):
    content = tmp_path / "r.trec"
    builders.write_run(content, builders.SCIFACT_RUN)
    builders.put_in_hub_cache(
        hub_cache,
        "unicamp-dl/beir-runs",
        "dataset",
        "bm25/run.beir-v1.0.0-scifact-flat.trec",
        content.read_bytes(),
    )
    out = tmp_path / "hub"
    result = cli("beir", "--datasets", "scifact", "--model", "bm25", "--top-k", "10", "--out", out)
    assert result.exit_code == 0, result.output
    value = expected_fixture_values(10)["scifact"]
    assert f"{value - 0.6789:+.4f}" in result.output  # differs from Pyserini's published 0.6789
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["datasets"][0]["first_stage"]
    assert record["kind"] == "hub" and record["repo"] == "unicamp-dl/beir-runs"
    assert record["reference_ndcg10"] == 0.6789

    config = tmp_path / "ok.yaml"
    text = Path("rerank_eval/config/benchmarks.yaml").read_text(encoding="utf-8")
    config.write_text(text.replace("pyserini-bm25-flat: 0.6789", f"pyserini-bm25-flat: {value + 3e-4:.6f}"))
    out_ok = tmp_path / "hub-ok"
    result = cli(
        "beir",
        "--config",
        config,
        "--datasets",
        "scifact",
        "--model",
        "bm25",
        "--top-k",
        "10",
        "--out",
        out_ok,
    )
    assert result.exit_code == 0, result.output
    assert table_cells(result.output)["scifact"][-1] == "OK"  # the check's own cell (the caption says OK too)
    # over a top-3 the first stage's nDCG@10 is not the published measure: nothing is checked
    shallow = cli(
        "beir", "--datasets", "scifact", "--model", "bm25", "--top-k", "3", "--out", tmp_path / "top-3"
    )
    assert shallow.exit_code == 0, shallow.output
    assert "vs published" not in shallow.output
    # recall is measured over the candidates reranked: R@3 here, not the default depth's R@100
    summary = pd.read_csv(tmp_path / "top-3" / "summary.csv").set_index("measure")
    recall = mean(first_stage_recall(builders.SCIFACT_RUN, builders.SCIFACT_QRELS, 3).values())
    assert summary.loc["R@3", "first_stage"] == pytest.approx(recall, abs=1e-9) and 0 < recall < 1
    assert "R@100" not in summary.index


def test_builtin_bm25s_first_stage_on_miracl(tmp_path):
    out = tmp_path / "miracl"
    result = cli("miracl", "--languages", "sw,yo", "--model", "bm25", "--first-stage", "bm25s", "--out", out)
    assert result.exit_code == 0, result.output
    assert "MIRACL-18 subset (2 of 18)" in result.output
    lines = (out / "runs" / "sw.trec").read_text().splitlines()
    first_by_query = {}
    for line in lines:
        first_by_query.setdefault(line.split()[0], line.split()[2])
    assert first_by_query == {"1": "100#0", "2": "200#0"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["datasets"][0]["first_stage"]["kind"] == "bm25s"
    assert manifest["datasets"][0]["first_stage"]["settings"]["k1"] == 0.9


def test_miracl_with_supplied_runs(tmp_path):
    sw_run = {"1": {"100#1": 2.0, "100#0": 1.0}, "2": {"200#0": 3.0}}
    yo_run = {"5": {"300#0": 2.0, "300#1": 1.0}}
    sw_path = builders.write_run(tmp_path / "sw.trec", sw_run)
    yo_path = builders.write_run(tmp_path / "yo.trec", yo_run)
    out = tmp_path / "miracl-runs"
    result = cli(
        "miracl",
        "--languages",
        "sw,yo",
        "--model",
        "bm25",
        "--run",
        f"sw={sw_path}",
        "--run",
        f"yo={yo_path}",
        "--run-reference",
        "pyserini-bm25",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    sw = mean(first_stage_ndcg(sw_run, builders.MIRACL["sw"]["qrels"], 100).values())
    yo = mean(first_stage_ndcg(yo_run, builders.MIRACL["yo"]["qrels"], 100).values())
    assert summary_value(out, "sw") == pytest.approx(sw, abs=1e-9)
    assert summary_value(out, "MIRACL-18 subset (2 of 18)") == pytest.approx((sw + yo) / 2, abs=1e-9)
    # the runs are checked against Pyserini's published BM25 figures (benchmarks.md)
    manifest = json.loads((out / "manifest.json").read_text())
    records = {r["key"]: r["first_stage"] for r in manifest["datasets"]}
    assert records["sw"]["reference_name"] == "pyserini-bm25"
    assert (records["sw"]["reference_ndcg10"], records["yo"]["reference_ndcg10"]) == (0.3826, 0.4059)
    assert "vs published" in result.output and f"{sw - 0.3826:+.4f}" in result.output
    # and so is R@100 (Pyserini publishes it for MIRACL), computed here over the top 100
    sw_recall = mean(first_stage_recall(sw_run, builders.MIRACL["sw"]["qrels"], 100).values())
    assert (records["sw"]["reference_r100"], records["yo"]["reference_r100"]) == (0.7008, 0.7325)
    assert table_cells(result.output)["sw"][-2:] == [f"{sw - 0.3826:+.4f}", f"{sw_recall - 0.7008:+.4f}"]


GROUP_SUITE = """
suites:
  forums:
    average_label: Forums
    defaults: {language: en, drop_self_matches: false, in_average: false}
    groups:
      cqadupstack: {reference: {jina-embeddings-v3: 0.4259}}
    datasets:
      - {key: cqadupstack-android, id: beir/cqadupstack/android, group: cqadupstack}
      - {key: cqadupstack-english, id: beir/cqadupstack/english, group: cqadupstack}
      - {key: scifact, id: beir/scifact/test, in_average: true, reference: {jina-embeddings-v3: 0.7253}}
"""


def test_a_group_with_a_published_figure_of_its_own_is_checked_against_it(tmp_path):
    """jina-embeddings-v3 has one CQADupStack figure (the suite's `groups`), none per forum: the
    group row is checked against it when the whole group runs, and not when part of it does."""
    config = tmp_path / "forums.yaml"
    config.write_text(GROUP_SUITE)
    runs = {f"cqadupstack-{forum}": builders.write_run(tmp_path / f"{forum}.trec", data["run"])
            for forum, data in builders.CQA.items()}  # fmt: skip
    runs["scifact"] = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)

    def run(out: Path, keys: list[str]):
        supplied = [a for key in keys for a in ("--run", f"{key}={runs[key]}")]
        reference = ("--run-reference", "jina-embeddings-v3")
        return cli("run", "forums", "--config", config, "--datasets", ",".join(keys), "--model", "bm25",
                   "--top-k", "10", *supplied, *reference, "--out", out)  # fmt: skip

    whole = run(tmp_path / "whole", list(runs))
    assert whole.exit_code == 0, whole.output
    group = expected_fixture_values(10)["cqadupstack"]
    row = next(line for line in whole.output.splitlines() if "cqadupstack " in line)
    assert f"{group - 0.4259:+.4f}" in row
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    fields = {(r["first_stage"]["reference_ndcg10"], r["first_stage"]["group_reference_ndcg10"])
              for r in manifest["datasets"]}  # fmt: skip
    assert fields == {(None, 0.4259), (0.7253, None)}
    assert cli("export", tmp_path / "whole").output.strip() in whole.output  # read back: the same check

    part = run(tmp_path / "part", ["cqadupstack-android", "scifact"])  # one forum: no figure to check
    assert part.exit_code == 2
    assert part.output.strip() == (
        "error: --run-reference jina-embeddings-v3: the config has no such published figure for "
        "cqadupstack-android (it has: none)"
    )


# the forums in the average too, and a dataset of their own beside them
PART_SUITE = (
    GROUP_SUITE.replace("in_average: false", "in_average: true") + "      - {key: fiqa, id: beir/fiqa/test}\n"
)


def test_a_group_run_in_part_is_said_so_and_leaves_the_headline_average(runs_dir, tmp_path):
    """One of two forums is another figure than the group's (mean of both): the row says so, the
    average over it is a subset, and published group figures are not set beside it."""
    config = tmp_path / "forums.yaml"
    config.write_text(PART_SUITE)

    def run(out: Path, keys: list[str]):
        supplied = [a for key in keys for a in ("--run", f"{key}={runs_dir / key}.trec")]
        return cli("run", "forums", "--config", config, "--datasets", ",".join(keys), "--model", "bm25",
                   "--top-k", "3", *supplied, "--out", out)  # fmt: skip

    part = run(tmp_path / "part", ["cqadupstack-android", "fiqa", "scifact"])
    assert part.exit_code == 0, part.output
    expected = expected_fixture_values(top_k=3)
    android = builders.CQA["android"]
    forum = mean(first_stage_ndcg(android["run"], android["qrels"], 3).values())
    rows = [forum, expected["fiqa"], expected["scifact"]]
    assert summary_value(tmp_path / "part", "Forums subset (3 of 3, 1 in part)") == pytest.approx(mean(rows))
    note = ("cqadupstack: mean over 1 of its 2 members (cqadupstack-android), not the whole group's "
            "figure.")  # fmt: skip
    assert note in " ".join(part.output.split())
    whole = run(tmp_path / "whole", ["cqadupstack-android", "cqadupstack-english", "fiqa", "scifact"])
    assert whole.exit_code == 0, whole.output
    assert summary_value(tmp_path / "whole", "Forums") == pytest.approx(
        mean([expected["cqadupstack"], expected["fiqa"], expected["scifact"]])
    )
    assert "not the whole group's" not in whole.output

    # Pyserini's BM25 has a figure per forum and one for the group: the part shows its forum's.
    json_path = tmp_path / "c.json"
    compared = cli("compare", tmp_path / "part", "--published", "pyserini-bm25-flat", "--json", json_path)
    assert compared.exit_code == 0, compared.output
    cells = {row["dataset"]: row["cells"] for row in json.loads(json_path.read_text())["rows"]}
    published = "pyserini-bm25-flat (published)"
    assert cells["cqadupstack"][published]["value"] == 0.3801  # android's, not the group's 0.3021
    assert cells["Forums subset (3 of 3, 1 in part)"]["bm25"]["value"] == pytest.approx(mean(rows))
    assert cells["Forums subset (3 of 3, 1 in part)"][published]["value"] == pytest.approx(
        mean([0.3801, 0.2361, 0.6789])
    )
    said = " ".join(compared.output.split())
    assert note[:-1] in said
    assert f"cqadupstack: {published} is the mean of its figures for those members" in said


RECALL_SUITE = """
suites:
  forums:
    average_label: Forums
    defaults: {language: en, drop_self_matches: false, in_average: true}
    datasets:
      - key: cqadupstack-android
        id: beir/cqadupstack/android
        group: cqadupstack
        reference_r100: {mine: 0.75}
      - key: cqadupstack-english
        id: beir/cqadupstack/english
        group: cqadupstack
        reference: {mine: 0.9}
        reference_r100: {mine: 0.25}
      - {key: scifact, id: beir/scifact/test, reference: {mine: 0.5}, reference_r100: {mine: 0.5}}
"""


def test_published_recall_is_checked_per_dataset_and_as_a_groups_mean(tmp_path, monkeypatch):
    """R@100 beside nDCG@10: a dataset against its own figures, a group against the mean of its
    members' where each has one (R@100 here; nDCG@10 only english has, so the group has none)."""
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))  # the whole caption: no journal note
    config = tmp_path / "forums.yaml"
    config.write_text(RECALL_SUITE)
    runs = {
        "cqadupstack-android": {"q1": {"c2": 2.0}, "q2": {"c3": 3.0, "c1": 1.0}},  # q1 misses c1
        "cqadupstack-english": {"q7": {"e1": 1.0}},
        "scifact": builders.SCIFACT_RUN,  # query 3 has no candidates
    }
    qrels = {
        "cqadupstack-android": builders.CQA["android"]["qrels"],
        "cqadupstack-english": builders.CQA["english"]["qrels"],
        "scifact": builders.SCIFACT_QRELS,
    }
    supplied = [
        a for key, run in runs.items() for a in ("--run", f"{key}={builders.write_run(tmp_path / key, run)}")
    ]

    def table(top_k: int, out: Path, *metrics: str) -> str:
        result = cli("run", "forums", "--config", config, "--model", "bm25", *supplied, "--top-k", top_k,
                     "--run-reference", "mine", "--out", out, *metrics)  # fmt: skip
        assert result.exit_code == 0, result.output
        return result.output

    output = table(100, tmp_path / "out")
    recall = {key: mean(first_stage_recall(runs[key], qrels[key], 100).values()) for key in runs}
    assert recall == {"cqadupstack-android": 0.5, "cqadupstack-english": 1.0, "scifact": 2 / 3}
    scifact_ndcg = mean(first_stage_ndcg(runs["scifact"], qrels["scifact"], 100).values())
    assert "nDCG@10 and R@100" in output and output.count("vs published") == 3  # two headers, the caption
    assert {name: cells[-2:] for name, cells in table_cells(output).items()} == {
        "cqadupstack": ["", f"{0.75 - 0.5:+.4f}"],  # the forums' mean recall against their mean figure
        "scifact": [f"{scifact_ndcg - 0.5:+.4f}", f"{2 / 3 - 0.5:+.4f}"],
        "Forums": ["", ""],
    }
    assert "First stage vs published (nDCG@10 and R@100)" in output
    saved = load_result(tmp_path / "out")
    assert Report(saved.manifest, saved.per_query).caption() == [
        "First stage: run file cqadupstack-android; run file cqadupstack-english; run file scifact; "
        "top-100 candidates in first-stage order.",
        "cqadupstack: mean over its 2 members (cqadupstack-android, cqadupstack-english).",
        "Forums: mean over cqadupstack, scifact.",
        "Judged queries without candidates score 0: scifact (1 of 3).",
        "First stage vs published (nDCG@10 and R@100): OK within ±0.0005 of the published figure (mine), "
        "else the difference.",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["first_stage"]["reference_r100"] for r in manifest["datasets"]] == [0.75, 0.25, 0.5]
    assert cli("export", tmp_path / "out").output.strip() in output  # read back: the same checks

    # over a top-50 the first stage's "R@100" is its R@50, over a top-5 its nDCG@10 an nDCG@5
    measures = ("--metric", "nDCG@10", "--metric", "R@100")
    shallow = table(50, tmp_path / "top-50", *measures)
    assert shallow.count("vs published") == 2 and "First stage vs published (nDCG@10)" in shallow
    assert "vs published" not in table(5, tmp_path / "top-5", *measures)


def test_unknown_run_reference_is_refused_before_any_work(tmp_path):
    run = builders.write_run(tmp_path / "sw.trec", {"1": {"100#0": 1.0}})
    out = tmp_path / "never"
    result = cli("miracl", "--languages", "sw", "--model", "bm25", "--run", f"sw={run}",
                 "--run-reference", "pyserini-bm25-flat", "--out", out)  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --run-reference pyserini-bm25-flat: the config has no such published figure for sw "
        "(it has: jina-embeddings-v3, pyserini-bm25)"
    ]
    assert not out.exists()


def test_extra_metric_and_progress_lines_without_terminal(runs_dir, tmp_path):
    out = tmp_path / "metrics"
    result = cli(
        "beir",
        "--datasets",
        "fiqa",
        "--model",
        "bm25",
        "--runs-dir",
        runs_dir,
        "--metric",
        "nDCG@10",
        "--metric",
        "RR@10",
        "--out",
        out,
        "--fresh",
    )
    assert result.exit_code == 0, result.output
    rr = mean(
        1.0 / (trec_ranking(builders.FIQA_RUN[q]).index(next(iter(j))) + 1)
        for q, j in builders.FIQA_QRELS.items()
    )
    assert summary_value(out, "fiqa", measure="RR@10") == pytest.approx(rr)
    assert "keeping the first-stage order of fiqa: 2/2" in result.output  # (bm25 reranks nothing)


def test_the_result_table_holds_each_figure_in_its_column(runs_dir, tmp_path):
    """The neutral table every format renders, cell by cell, against means taken here from
    per_query.csv: the first stage's and the reranked nDCG@10, a signed Δ, Judged@10, R@100, the
    judged queries; and its column names, one line each (Markdown, LaTeX and HTML headers)."""
    from rerank_eval.reporting.render.markdown import markdown

    out = tmp_path / "table"
    result = cli("beir", "-d", "scifact,fiqa", "--model", "bm25", "--runs-dir", runs_dir, "--out", out)
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    table = report_table(Report(saved.manifest, saved.per_query))
    names = ["Dataset", "nDCG@10 first stage", "nDCG@10 reranked", "Δ", "Judged@10 reranked",
             "R@100 first stage", "Queries", "Seconds"]  # fmt: skip
    assert [c.name for c in table.columns] == names
    assert "| " + " | ".join(names) + " |" in markdown(table).splitlines()
    frame = pd.read_csv(out / "per_query.csv", dtype={"query_id": str})
    for row in table.rows:
        key = row[0].value
        if key not in ("scifact", "fiqa"):
            continue

        def mean_of(stage: str, measure: str, key: str = key) -> float:
            chosen = frame[(frame.dataset == key) & (frame.stage == stage) & (frame.measure == measure)]
            return float(chosen.value.mean())

        first, reranked = mean_of("first_stage", "nDCG@10"), mean_of("reranked", "nDCG@10")
        queries = frame[(frame.dataset == key) & (frame.stage == "reranked")].query_id.nunique()
        expected = [f"{first:.4f}", f"{reranked:.4f}", f"{reranked - first:+.4f}",
                    f"{mean_of('reranked', 'Judged@10'):.4f}", f"{mean_of('first_stage', 'R@100'):.4f}",
                    str(queries)]  # fmt: skip
        assert [cell.value for cell in row[1:7]] == expected, key
        assert expected[2] == "+0.0000"  # the first-stage order kept: Δ 0, signed


# -- errors: one line, exit 2, nothing published --------------------------------------------------


# settings are checked before the model is looked for
UNLOADED_MODEL = ["beir", "--datasets", "fiqa", "--model", "/no/model", "--family"]


def assert_clean_failure(result, out: Path, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("error:")
    for fragment in fragments:
        assert fragment in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not out.with_name(out.name + ".incomplete").exists()


RUNS_DIR_ARGS = ["beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", "."]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "nosuch"], ["unknown suite 'nosuch'"]),
        (["beir", "--datasets", "nosuch"], ["unknown dataset 'nosuch'"]),
        (["beir", "--datasets", "fiqa", "--model", "nosuch"], ["model 'nosuch' is neither a checkpoint"]),
        (  # a path that looks like a hub id to a loose check: one line, not huggingface_hub's traceback
            ["beir", "--datasets", "fiqa", "--model", "./nosuch", "--family", "cross-encoder"],
            ["model './nosuch' is neither a checkpoint directory (no folder ", "nor a hub id (ORG/NAME)"],
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--metric", "Bogus@3"],
            ["unknown measure 'Bogus@3'"],
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--run", "fiqa=/no/such.trec"],
            ["not found: /no/such.trec"],
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--candidate-order", "sideways"],
            ["unknown candidate order"],
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--run", "fiqa=/no/[/x]/[bold].trec"],
            ["run file for fiqa not found: /no/[/x]/[bold].trec"],  # printed as is, never as markup
        ),
        (
            ["miracl", "--languages", "sw", "--model", "bm25", "--run-reference", "pyserini-bm25"],
            ["--run-reference describes run files you pass (--run, --runs-dir); there are none"],
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--top-k", "0"],
            ["--top-k must be between 1 and 10,000, got 0"],
        ),
        # a width alone would ask str.format for gigabytes; attributes and conversions reach objects
        *(
            (
                [*RUNS_DIR_ARGS, "--run-pattern", pattern],
                [f"--run-pattern {pattern!r} may use only {{key}} and {{name}}"],
            )
            for pattern in ("{foo}", "{id}", "{key:>9223372036854775807}", "{key.__class__}", "{key!r}")
        ),
        (
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", "/no/such/folder"],
            ["--runs-dir /no/such/folder is not a folder"],
        ),
        (  # a file that exists
            ["beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", rerank_eval.__file__],
            [f"--runs-dir {rerank_eval.__file__} is not a folder"],
        ),
        *(  # an unset shell variable would otherwise start the whole suite
            ([command, flag, value, "--model", "bm25"], ["--datasets (--languages) names no dataset"])
            for command, flag, value in [("miracl", "--languages", ""), ("beir", "--datasets", " , ")]
        ),
        (
            ["miracl", "--languages", "SW", "--model", "bm25"],
            ["unknown dataset 'SW'", "(did you mean 'sw'?)"],
        ),
        (
            [*UNLOADED_MODEL, "cross-encoder", "--set", "max_length=-5"],
            ["setting max_length of family cross-encoder must be a positive integer, got -5"],
        ),
        (
            [*UNLOADED_MODEL, "listwise-last-token", "--set", "max_doc_length=abc"],
            ["setting max_doc_length of family listwise-last-token must be a positive integer, got 'abc'"],
        ),
        # numbers in ASCII digits, as YAML and --first-stage-set read them
        *(
            (
                [*UNLOADED_MODEL, "cross-encoder", "--set", f"max_length={text}"],
                [f"setting max_length of family cross-encoder must be a positive integer, got '{text}'"],
            )
            for text in ("1_000", "\u0665", "nan")
        ),
        (
            [*UNLOADED_MODEL, "listwise-last-token", "--set", "fused_rms_norm=1"],
            ["setting fused_rms_norm of family listwise-last-token must be true or false, got 1"],
        ),
        (
            [*UNLOADED_MODEL, "listwise-last-token", "--set", "trim_last_layer=yes"],
            ["setting trim_last_layer of family listwise-last-token must be true or false, got 'yes'"],
        ),
    ],
)
def test_bad_arguments(args, fragments, tmp_path):
    out = tmp_path / "never"
    assert_clean_failure(cli(*args, "--out", out), out, *fragments)


def test_two_names_of_one_measure_make_one_column(runs_dir, tmp_path):
    out = tmp_path / "recall"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", runs_dir,
                 "--metric", "nDCG@10", "--metric", "R(rel=1)@100", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["protocol"]["metrics"] == ["nDCG@10", "R@100"]
    recall = mean(
        len(set(builders.FIQA_RUN.get(q, {})) & {d for d, r in judged.items() if r > 0})
        / sum(1 for r in judged.values() if r > 0)
        for q, judged in builders.FIQA_QRELS.items()
    )
    assert summary_value(out, "fiqa", measure="R@100") == pytest.approx(recall) and recall > 0


def test_a_metric_the_table_shows_anyway_has_its_columns_once(runs_dir, tmp_path):
    """R@100 over a top-100 and Judged@10 are columns of every table: asked for as metrics, their
    own columns hold them, with no second column of the same name (an export's CSV header would
    hold it twice)."""
    from rerank_eval.reporting.report import models_table

    out = tmp_path / "asked"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", runs_dir,
                 "--metric", "R@100", "--metric", "Judged@10", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    report = Report(saved.manifest, saved.per_query)
    names = [column.name for column in report_table(report).columns]
    assert names == ["Dataset", "R@100 first stage", "R@100 reranked", "Δ", "Judged@10 first stage",
                     "Judged@10 reranked", "Δ", "Queries", "Seconds"]  # fmt: skip
    assert [column.name for column in models_table([report]).columns][:3] == [
        "Dataset",
        "R@100 first stage",
        "bm25",
    ]
    recall = summary_value(out, "fiqa", measure="R@100", stage="first_stage")
    assert report_table(report).rows[0][1].text == f"{recall:.4f}"
    judged_first = tmp_path / "judged"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--runs-dir", runs_dir,
                 "--metric", "Judged@10", "--out", judged_first)  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = load_result(judged_first)
    columns = models_table([Report(saved.manifest, saved.per_query)]).columns
    assert [column.name for column in columns] == [
        "Dataset",
        "Judged@10 first stage",
        "R@100 first stage",
        "bm25",
        "Queries",
    ]


def test_malformed_run_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("10 Q0 f1 1 3.0 tag\n10 Q0 f2 2 tag\n")
    out = tmp_path / "never"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={bad}", "--out", out)
    assert_clean_failure(result, out, f"{bad}, line 2", "expected 6 fields")


def test_run_sharing_no_query_with_qrels(tmp_path):
    run = builders.write_run(tmp_path / "other.trec", {"999": {"f1": 1.0}})
    out = tmp_path / "never"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--run", f"fiqa={run}", "--out", out)
    assert_clean_failure(result, out, "shares no query with its qrels")


def test_empty_candidate_list(tmp_path):
    only_self = builders.write_run(tmp_path / "self.trec", {"a1": {"a1": 1.0}, "a4": {"a4": 2.0}})
    out = tmp_path / "never"
    result = cli(
        "beir", "--datasets", "arguana", "--model", "bm25", "--run", f"arguana={only_self}", "--out", out
    )
    assert_clean_failure(result, out, "gives no candidate documents")


def test_later_dataset_failure_publishes_nothing(runs_dir, tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q7 Q0 e1 1 not-a-number x\n")
    out = tmp_path / "never"
    result = cli(
        "beir",
        "--datasets",
        "fiqa,cqadupstack-english",
        "--model",
        "bm25",
        "--run",
        f"fiqa={runs_dir / 'fiqa.trec'}",
        "--run",
        f"cqadupstack-english={bad}",
        "--out",
        out,
    )
    assert_clean_failure(result, out, "line 1", "is not a number")


def test_uncached_published_run_offline(tmp_path):
    out = tmp_path / "never"
    result = cli("beir", "--datasets", "fiqa", "--model", "bm25", "--out", out)
    assert_clean_failure(result, out, "run.beir-v1.0.0-fiqa-flat.trec is not cached", "rerank-eval fetch")


def test_console_script_fails_in_one_line(tmp_path):
    """The installed entry point, in a real process: no traceback, exit 2."""
    out = tmp_path / "never"
    done = subprocess.run(
        [sys.executable, "-m", "rerank_eval", "beir", "--datasets", "nosuch", "--out", str(out)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown dataset" in done.stderr
    assert "Traceback" not in done.stderr


def test_miracl_without_the_lucene_extra_falls_back_to_bm25s_and_says_so(tmp_path, monkeypatch):
    from rerank_eval.first_stage import lucene_runtime

    monkeypatch.setattr(lucene_runtime, "available", lambda: False)
    out = tmp_path / "miracl"
    result = cli("miracl", "--languages", "sw,yo", "--model", "bm25", "--out", out)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: first stage lucene")]
    assert warnings == [
        "warning: first stage lucene cannot run here (it needs Pyserini and a Java runtime (pip install "
        "'rerank-eval[lucene]')); sw, yo use bm25s instead"
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [d["first_stage"]["kind"] for d in manifest["datasets"]] == ["bm25s", "bm25s"]
    assert [d["first_stage"]["fallback_from"] for d in manifest["datasets"]] == ["lucene", "lucene"]


def test_lucene_named_without_the_extra_is_one_line_before_any_work(tmp_path, monkeypatch):
    from rerank_eval.first_stage import lucene_runtime

    monkeypatch.setattr(lucene_runtime, "available", lambda: False)
    out = tmp_path / "out"
    result = cli("beir", "--datasets", "scifact", "--model", "bm25", "--first-stage", "lucene", "--out", out)
    assert result.exit_code == 2
    assert result.output.startswith("error: the Lucene first stage needs Pyserini and a Java runtime: ")
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    # the command line's way out is a flag, the library's a parameter
    assert result.output.strip().endswith("(or --first-stage bm25s, the built-in approximation)")
    assert str(lucene_runtime.missing_extra()).endswith("(or first_stage= bm25s, the built-in approximation)")
    with pytest.raises(UserError, match=r"needs Java 21 or later; JAVA_HOME=.* holds 17\.0\.2"):
        lucene_runtime.check_java("17.0.2")
    lucene_runtime.check_java("21.0.5")


def test_a_java_that_cannot_start_is_one_line_and_its_report_goes_to_the_cache(tmp_path, monkeypatch):
    """Under a memory limit the JVM could not start, its banner was read as a version, and the
    advice was to unset a JAVA_HOME the tool had set itself; the JVM also left hs_err_pid*.log in
    the working folder. Now: one line with the JVM's reason, and its report in the cache."""
    import stat

    from rerank_eval.first_stage import lucene_runtime

    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/args\n'
        'echo "Error occurred during initialization of VM"\n'
        'echo "Could not allocate compressed class space: 1073741824 bytes"\n'
        "exit 1\n"
    )
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(lucene_runtime, "address_space_left", lambda: None)  # (no limit: none sized)
    with pytest.raises(UserError) as refused:
        lucene_runtime._java(str(home), "--version")
    assert str(refused.value) == (
        f"cannot start Java from JAVA_HOME={home}: Could not allocate compressed class space: "
        "1073741824 bytes"
    )
    assert (tmp_path / "args").read_text().split() == [
        f"-XX:ErrorFile={tmp_path / 'cache' / 'java' / 'hs_err_pid%p.log'}",
        f"-XX:ReplayDataFile={tmp_path / 'cache' / 'java' / 'replay_pid%p.log'}",
        "--version",
    ]
    java.write_text("#!/bin/sh\necho 'Unrecognized option: --version' >&2\nexit 1\n")  # an older Java
    assert lucene_runtime._java(str(home), "--version") == ""  # (then refused as older than 21)


def test_a_fallback_is_named_only_where_a_configured_first_stage_was_replaced():
    from rerank_eval.config.reader import load_config
    from rerank_eval.pipeline.plan import CandidateOrder, RunPlan

    config = load_config()
    suite = config.suite("miracl")
    (spec,) = suite.select(["sw"])
    assert spec.first_stage == "lucene"

    def plan(override=None) -> RunPlan:
        order = CandidateOrder.parse("first-stage")
        return RunPlan(config, suite, [spec], 100, ["nDCG@10"], order, first_stage_override=override)

    assert plan().fell_back_from(spec, "bm25s") == "lucene"
    assert plan().fell_back_from(spec, "lucene") is None
    assert plan("bm25s").fell_back_from(spec, "bm25s") is None  # chosen on the command line


def test_a_reranker_that_reorders_keeps_each_stages_own_per_query_values(tmp_path, monkeypatch):
    """per_query.csv holds the first stage's values and the reranker's, each from its own ranking.
    With the pass-through model the two are equal, so only a model that reorders shows a mix-up:
    here one that scores each candidate by minus its first-stage score (the order reversed)."""
    import numpy as np

    from rerank_eval.rerankers.first_stage_order import FirstStageOrder

    reverse = lambda self, requests: [-np.asarray(r.first_stage_scores) for r in requests]  # noqa: E731
    monkeypatch.setattr(FirstStageOrder, "score_batch", reverse)
    monkeypatch.setenv("RERANK_EVAL_CACHE", str(tmp_path / "cache"))  # (no journal of the real bm25)
    run_file = builders.write_run(tmp_path / "scifact.trec", builders.SCIFACT_RUN)
    out = tmp_path / "out"
    result = cli("beir", "--datasets", "scifact", "--model", "bm25", "--run", f"scifact={run_file}",
                 "--top-k", "3", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    qrels, run = builders.SCIFACT_QRELS, builders.SCIFACT_RUN
    top = {q: trec_ranking(docs)[:3] for q, docs in run.items()}
    reversed_order = {q: trec_ranking({d: -run[q][d] for d in docs}) for q, docs in top.items()}
    expected = {
        "first_stage": first_stage_ndcg(run, qrels, 3),
        "reranked": {q: ndcg(reversed_order.get(q, []), judged) for q, judged in qrels.items()},
    }
    assert expected["first_stage"] != expected["reranked"]  # (the reversed order counts otherwise)
    table = pd.read_csv(out / "per_query.csv", dtype={"query_id": str})
    for stage, values in expected.items():
        rows = table[(table.stage == stage) & (table.measure == "nDCG@10")]
        assert dict(zip(rows.query_id, rows.value, strict=True)) == pytest.approx(values, abs=1e-12), stage
