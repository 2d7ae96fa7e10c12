"""`rerank-eval compare` on synthetic per-query results of known differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.config.reader import load_config
from rerank_eval.errors import UserError
from rerank_eval.pipeline.execute import summarize
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.stats import SEED, holm
from rerank_eval.reporting.compare.table import caption, comparison_table
from rerank_eval.reporting.render import data
from rerank_eval.reporting.render.markdown import markdown
from rerank_eval.reporting.render.terminal import terminal_table
from rerank_eval.results.folder import ResultWriter, load_result, load_results
from tests import builders
from tests.expected import holm_by_hand

RNG = np.random.default_rng(7)
QUERIES = {
    "scifact": [f"s{i}" for i in range(30)],
    "fiqa": [f"f{i}" for i in range(25)],
    "cqadupstack-android": [f"a{i}" for i in range(12)],
    "cqadupstack-english": [f"e{i}" for i in range(9)],
}
BASE = {d: RNG.uniform(0.1, 0.7, len(q)) for d, q in QUERIES.items()}
BEIR_IDS = {
    d.key: d.ir_datasets_id for d in load_config().suite("beir").datasets
}  # what published figures are of
BEIR_FORUMS = [d.key for d in load_config().suite("beir").datasets if d.group == "cqadupstack"]


def make_result(root: Path, name: str, shift: float, noise: float = 0.05, *, top_k: int = 100,
                sha: str = "abc", datasets: list[str] | None = None, seed: int = 0,
                order: str = "first-stage", queries: dict[str, list[str]] = QUERIES,
                first_stage: dict | None = None, groups: dict | None = None) -> Path:  # fmt: skip
    rng = np.random.default_rng(seed)
    writer = ResultWriter(root / name)
    records = []
    for key in datasets or list(QUERIES):
        values = np.clip(BASE[key] + shift + rng.normal(0, noise, len(QUERIES[key])), 0, 1)
        values[:2] = BASE[key][:2]  # two exact ties with the baseline per dataset
        per_query = {"nDCG@10": dict(zip(queries[key], values.tolist()))}
        writer.add_values(key, "reranked", per_query)
        writer.add_values(key, "first_stage", {"nDCG@10": dict(zip(queries[key], BASE[key].tolist()))})
        records.append({
            "key": key, "row": "cqadupstack" if key.startswith("cqa") else key,
            "ir_datasets_id": BEIR_IDS[key], "in_average": not key.startswith("cqa"),
            "drop_self_matches": False,
            "first_stage": first_stage or {"kind": "hub", "label": "BM25", "sha256": sha, "settings": None},
            "coverage": {"judged_queries": len(queries[key]), "queries_without_run": 0},
            "timings": {"rerank_seconds": 1.0},
        })  # fmt: skip
    manifest = {
        "protocol": {
            "top_k": top_k,
            "metrics": ["nDCG@10"],
            "measures": ["nDCG@10"],
            "candidate_order": order,
        },
        "suite": {
            "name": "beir",
            "average_label": "BEIR-13",
            "average_rows": ["fiqa", "scifact"],
            **({"groups": groups} if groups else {}),
        },
        "model": {"name": name},
        "datasets": records,
    }
    return writer.publish(manifest, summarize)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return {
        "base": make_result(root, "base", 0.0, noise=0.0),
        "better": make_result(root, "better", 0.08, seed=1),
        "same": make_result(root, "same", 0.0, noise=0.05, seed=2),
        "worse": make_result(root, "worse", -0.03, seed=3),
    }


def values(folder: Path, dataset: str) -> np.ndarray:
    frame = load_result(folder).per_query
    selected = frame[(frame.dataset == dataset) & (frame.stage == "reranked")]
    return selected.set_index("query_id").loc[QUERIES[dataset], "value"].to_numpy()


def comparison(runs, *names, **kwargs) -> Comparison:
    return Comparison([load_result(runs[n]) for n in names], **kwargs)


def test_p_values_equal_scipy_paired_t_test(runs):
    result = comparison(runs, "base", "better", "worse")
    row = next(r for r in result.rows if r.name == "scifact")
    for name in ("better", "worse"):
        expected = stats.ttest_rel(values(runs[name], "scifact"), values(runs["base"], "scifact")).pvalue
        assert row.cells[name].p_value == pytest.approx(expected, rel=1e-12)
        assert row.cells[name].delta == pytest.approx(
            values(runs[name], "scifact").mean() - values(runs["base"], "scifact").mean()
        )


def test_holm_adjustment_matches_hand_computation(runs):
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    result = comparison(runs, "base", "better", "same", "worse")

    for row in result.rows:
        tested = [row.cells[n] for n in ("better", "same", "worse") if row.cells[n].p_value is not None]
        assert [c.p_adjusted for c in tested] == pytest.approx(holm_by_hand([c.p_value for c in tested]))
    fiqa = next(r for r in result.rows if r.name == "fiqa")
    assert fiqa.cells["better"].significant and not fiqa.cells["same"].significant


def test_win_tie_loss_counts(runs):
    result = comparison(runs, "base", "better")
    cell = next(r for r in result.rows if r.name == "fiqa").cells["better"]
    difference = values(runs["better"], "fiqa") - values(runs["base"], "fiqa")
    assert (cell.wins, cell.ties, cell.losses) == (
        int((difference > 0).sum()),
        int((difference == 0).sum()),
        int((difference < 0).sum()),
    )
    assert cell.ties >= 2


def test_cqadupstack_row_pools_forum_queries(runs):
    result = comparison(runs, "base", "better")
    row = next(r for r in result.rows if r.name == "cqadupstack")
    assert row.kind == "group" and row.members == ["cqadupstack-android", "cqadupstack-english"]
    pooled = {n: np.concatenate([values(runs[n], f) for f in row.members]) for n in ("base", "better")}
    assert row.cells["better"].p_value == pytest.approx(
        stats.ttest_rel(pooled["better"], pooled["base"]).pvalue
    )
    forum_means = [values(runs["better"], f).mean() for f in row.members]
    assert row.cells["better"].value == pytest.approx(np.mean(forum_means))


def test_average_rows_test_over_datasets_with_bootstrap_interval(runs):
    result = comparison(runs, "base", "better")
    headline = next(r for r in result.rows if r.name == "BEIR-13")
    rows = {r.name: r for r in result.rows}
    per_row = {n: [rows[d].cells[n].value for d in ("scifact", "fiqa")] for n in ("base", "better")}
    assert headline.cells["better"].value == pytest.approx(np.mean(per_row["better"]))
    assert headline.cells["better"].p_value == pytest.approx(
        stats.ttest_rel(per_row["better"], per_row["base"]).pvalue
    )
    low, high = headline.cells["better"].interval
    differences = np.array(per_row["better"]) - np.array(per_row["base"])
    assert low <= differences.mean() <= high
    assert next(r for r in result.rows if r.name == "Average, all 3 rows").kind == "average"


def test_randomization_test_is_seeded_scipy_permutation_test(runs):
    """Over the queries in the order of their ids (the seeded resamples pair values by position)."""
    result = comparison(runs, "base", "worse", test="randomization")
    in_id_order = np.argsort(QUERIES["scifact"])
    x, y = values(runs["worse"], "scifact")[in_id_order], values(runs["base"], "scifact")[in_id_order]
    expected = stats.permutation_test(
        (x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=10_000, alternative="two-sided", random_state=SEED,
    ).pvalue  # fmt: skip
    assert next(r for r in result.rows if r.name == "scifact").cells["worse"].p_value == expected
    assert "randomization test" in "\n".join(caption(result))


def test_judged_queries_a_run_had_no_candidates_for_are_said_to_score_zero(runs):
    """Its own table said so; compare counted the zeros in Δ, test and W/T/L without a word."""
    import dataclasses

    worse = load_result(runs["worse"])
    records = [
        dataclasses.replace(record, coverage=dataclasses.replace(record.coverage, queries_without_run=4))
        if record.key == "scifact" else record
        for record in worse.manifest.datasets
    ]  # fmt: skip
    worse.manifest = dataclasses.replace(worse.manifest, datasets=records)
    result = Comparison([load_result(runs["base"]), worse])
    note = "scifact: worse had no candidates for 4 of its 30 judged queries, which score 0"
    assert note in result.footnotes
    assert not any("no candidates" in note for note in comparison(runs, "base", "worse").footnotes)


def test_the_randomization_p_does_not_depend_on_the_order_a_folder_lists_its_queries_in(runs):
    """The resamples pair values by position: the queries are paired in the order of their ids."""
    as_written = load_result(runs["worse"])
    listed_otherwise = load_result(runs["worse"])
    listed_otherwise.per_query = listed_otherwise.per_query.iloc[::-1]
    for test in ("randomization", "t-test"):
        p_values = [
            next(r for r in Comparison([load_result(runs["base"]), worse], test=test).rows
                 if r.name == "scifact").cells[worse.manifest.model.name].p_value
            for worse in (as_written, listed_otherwise)
        ]  # fmt: skip
        assert p_values[0] == p_values[1], test


def test_the_randomization_test_of_many_queries_runs_in_bounded_memory_with_the_same_p():
    """All 10,000 resamples at once took about 70 bytes for each of 10,000 × n values (9 GB for
    CQADupStack's 13,145 pooled queries, a traceback under a memory limit); in batches the peak
    stays bounded and the p-value is scipy's unbatched one, bit for bit."""
    import tracemalloc

    from rerank_eval.reporting.compare.stats import paired_p_value

    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 2_000)
    y = np.clip(x + rng.normal(0.01, 0.1, x.size), 0, 1)
    tracemalloc.start()
    p = paired_p_value(x, y, "randomization")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 120e6  # unbatched: 1.4 GB

    def scipy_p(a: np.ndarray, b: np.ndarray, batch: int | None) -> float:
        return stats.permutation_test(
            (a, b), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
            vectorized=True, n_resamples=10_000, alternative="two-sided", random_state=SEED, batch=batch,
        ).pvalue  # fmt: skip

    assert p == scipy_p(x, y, batch=97)  # scipy's own batching, in other batches
    assert paired_p_value(x[:60], y[:60], "randomization") == scipy_p(x[:60], y[:60], batch=None)


def test_best_value_is_bold(runs):
    table = markdown(comparison_table(comparison(runs, "base", "better", "worse")))
    scifact = next(line for line in table.splitlines() if line.startswith("| scifact"))
    best = max(values(runs[n], "scifact").mean() for n in ("base", "better", "worse"))
    assert f"**{best:.4f}**" in scifact and scifact.count("**") == 2


def test_csv_round_trip(runs, tmp_path):
    result = comparison(runs, "base", "better", "worse")
    path = tmp_path / "long.csv"
    path.write_text(data.comparison_csv(result))
    back = pd.read_csv(path)
    expected = data.long_frame(result)
    assert list(back.columns) == list(expected.columns)
    assert np.allclose(
        back["value"].astype(float), expected["value"].astype(float), rtol=1e-9, equal_nan=True
    )
    assert list(back["run"]) == list(expected["run"]) and list(back["dataset"]) == list(expected["dataset"])
    wide = pd.read_csv(io_text(data.comparison_csv(result, wide=True)), index_col=0)
    assert list(wide.columns) == ["base", "better", "worse"]
    assert wide.loc["fiqa", "better"] == pytest.approx(values(runs["better"], "fiqa").mean())


def test_csv_exports_keep_names_a_spreadsheet_would_run_as_text_and_numbers_as_numbers(tmp_path, runs):
    """OWASP's CSV injection advice: a text cell starting with = + - @ (a model folder is named by
    anyone) is led by an apostrophe; a negative Δ is a number and stays one."""
    import csv

    made = [make_result(tmp_path, name, -0.03, seed=3) for name in ("=1+1", "@SUM(1)", "-0.5")]
    out = {kind: tmp_path / f"{kind}.csv" for kind in ("long", "wide", "export")}
    commands = (
        ["compare", str(runs["base"]), *map(str, made), "--csv", str(out["long"])],
        ["compare", str(runs["base"]), *map(str, made), "--csv-wide", str(out["wide"])],
        ["export", str(made[0]), "--csv", str(out["export"])],
    )
    for command in commands:
        assert CliRunner().invoke(app, command).exit_code == 0
    long = list(csv.DictReader(out["long"].read_text().splitlines()))
    assert {line["run"] for line in long} >= {"'=1+1", "'@SUM(1)", "'-0.5", "base"}
    deltas = [float(line["delta"]) for line in long if line["run"] == "'-0.5" and line["delta"]]
    assert deltas and min(deltas) < 0  # written as numbers, not led by an apostrophe
    wide = list(csv.reader(out["wide"].read_text().splitlines()))
    assert wide[0] == ["dataset", "base", "'=1+1", "'@SUM(1)", "'-0.5"]
    export = list(csv.DictReader(out["export"].read_text().splitlines()))
    assert {line["model"] for line in export} == {"'=1+1"} and {line["suite"] for line in export} == {"beir"}
    deltas = [float(line["delta"]) for line in export if line["delta"]]
    assert deltas and min(deltas) < 0  # numbers, not led by an apostrophe


def io_text(text: str):
    import io

    return io.StringIO(text)


def test_refuses_unfair_comparisons_unless_forced(tmp_path, runs):
    other_k = make_result(tmp_path, "k50", 0.01, top_k=50)
    other_stage = make_result(tmp_path, "otherbm25", 0.01, sha="def")
    with pytest.raises(UserError, match=r"not a fair comparison: top-k differs \(base: 100, k50: 50\)"):
        Comparison([load_result(runs["base"]), load_result(other_k)])
    with pytest.raises(UserError, match="first stage of scifact differs"):
        Comparison([load_result(runs["base"]), load_result(other_stage)])
    forced = Comparison([load_result(runs["base"]), load_result(other_stage)], force=True)
    assert "WARNING: compared anyway (--force): first stage of scifact differs" in "\n".join(caption(forced))


def test_refuses_other_candidate_orders_and_other_query_sets(tmp_path, runs):
    reversed_order = make_result(tmp_path, "reversed", 0.01, order="reversed")
    with pytest.raises(UserError, match=r"candidate order differs \(base: first-stage, reversed: reversed\)"):
        Comparison([load_result(runs["base"]), load_result(reversed_order)])
    renamed = {**QUERIES, "fiqa": [f"g{i}" if i < 3 else q for i, q in enumerate(QUERIES["fiqa"])]}
    other_qrels = make_result(tmp_path, "otherqrels", 0.01, queries=renamed)
    with pytest.raises(UserError, match=r"query sets of fiqa differ .* \(6 queries in only one of them\)"):
        Comparison([load_result(runs["base"]), load_result(other_qrels)])
    assert "Top-100 candidates in first-stage order." in "\n".join(
        caption(comparison(runs, "base", "better"))
    )


def test_forced_over_other_query_sets_a_rows_delta_covers_the_queries_its_test_pairs(tmp_path, runs):
    """With --force and query sets that differ, a row's Δ was its two means' difference, each over
    its own queries, beside a test and W/T/L over the queries both hold: a Δ and a p-value of
    different data. The Δ is the paired one, a group's the mean of its members' (CQADupStack's
    value is the mean of its forums' means), and a footnote says how many queries it covers."""
    renamed = {
        **QUERIES,
        "fiqa": [f"g{i}" if i < 3 else q for i, q in enumerate(QUERIES["fiqa"])],
        "cqadupstack-english": [
            f"x{i}" if i < 4 else q for i, q in enumerate(QUERIES["cqadupstack-english"])
        ],
    }
    other = make_result(tmp_path, "otherqrels", 0.03, queries=renamed, seed=6)
    result = Comparison([load_result(runs["base"]), load_result(other)], force=True)
    by_name = {row.name: row for row in result.rows}

    def reranked(folder: Path, dataset: str) -> dict[str, float]:
        frame = load_result(folder).per_query
        selected = frame[(frame.dataset == dataset) & (frame.stage == "reranked")]
        return dict(zip(selected.query_id, selected.value))

    def paired(dataset: str) -> list[float]:
        mine, base = reranked(other, dataset), reranked(runs["base"], dataset)
        return [mine[q] - base[q] for q in QUERIES[dataset] if q in mine]

    assert by_name["fiqa"].cells["otherqrels"].delta == pytest.approx(np.mean(paired("fiqa")), abs=1e-15)
    forums = ["cqadupstack-android", "cqadupstack-english"]
    assert by_name["cqadupstack"].cells["otherqrels"].delta == pytest.approx(
        np.mean([np.mean(paired(forum)) for forum in forums]), abs=1e-15
    )
    scifact = by_name["scifact"].cells  # the same queries: the means' difference, as ever
    assert scifact["otherqrels"].delta == scifact["otherqrels"].value - scifact["base"].value
    assert "fiqa: otherqrels's Δ, test and W/T/L cover the 22 queries it shares with the baseline" in (
        result.footnotes
    )
    assert "BEIR-13: otherqrels's Δ and test take each row's value over its own queries, not the rows' " \
        "paired Δs" in result.footnotes  # fmt: skip


@pytest.mark.parametrize("subset_is", ["run", "baseline"])
def test_a_run_over_a_subset_of_the_baselines_queries_is_paired_over_those(tmp_path, runs, subset_is):
    """One side holds 22 of fiqa's 25 queries (the other all of them): Δ is the mean of the 22
    paired differences, not the difference of means over 22 and 25, and a footnote says so."""
    fewer = make_result(tmp_path, "fewer", 0.03, queries={**QUERIES, "fiqa": QUERIES["fiqa"][3:]}, seed=6)
    base, run = (runs["base"], fewer) if subset_is == "run" else (fewer, runs["base"])
    result = Comparison([load_result(base), load_result(run)], force=True)
    label = result.runs[1].label

    def reranked(folder: Path) -> dict[str, float]:
        frame = load_result(folder).per_query
        selected = frame[(frame.dataset == "fiqa") & (frame.stage == "reranked")]
        return dict(zip(selected.query_id, selected.value))

    mine, theirs = reranked(run), reranked(base)
    shared = QUERIES["fiqa"][3:]
    fiqa = next(row for row in result.rows if row.name == "fiqa").cells[label]
    assert fiqa.delta == pytest.approx(np.mean([mine[q] - theirs[q] for q in shared]), abs=1e-15)
    unpaired = np.mean(list(mine.values())) - np.mean(list(theirs.values()))
    assert abs(fiqa.delta - unpaired) > 1e-6  # (the two differ on these values)
    assert f"fiqa: {label}'s Δ, test and W/T/L cover the 22 queries it shares with the baseline" in (
        result.footnotes
    )


def test_missing_datasets_are_shown_missing_and_left_out_of_that_average(tmp_path, runs):
    partial = make_result(tmp_path, "partial", 0.02, datasets=["scifact"])
    result = Comparison([load_result(runs["base"]), load_result(partial)])
    fiqa = next(r for r in result.rows if r.name == "fiqa")
    assert fiqa.cells["partial"].value is None
    headline = next(r for r in result.rows if r.kind == "average")
    scifact = next(r for r in result.rows if r.name == "scifact")
    assert headline.cells["partial"].value == pytest.approx(scifact.cells["partial"].value)
    # Δ covers the rows both runs have, like the test: scifact only, not partial's scifact - base's mean
    assert headline.cells["partial"].delta == pytest.approx(
        scifact.cells["partial"].value - scifact.cells["base"].value
    )
    assert headline.cells["partial"].delta != pytest.approx(
        headline.cells["partial"].value - headline.cells["base"].value
    )
    assert any("partial averages 1 of 2 rows" in note for note in result.footnotes)
    assert "fiqa: not in partial" in result.footnotes
    # the CSV, the JSON and the plot say it too: a bar or a number alone would not
    frame = data.long_frame(result)
    flagged = frame[frame.partial][["dataset", "run"]].to_records(index=False).tolist()
    assert flagged == [(row.name, "partial") for row in result.rows if row.kind == "average"]
    cells = {row["dataset"]: row["cells"] for row in json.loads(data.comparison_json(result))["rows"]}
    assert cells[headline.name]["partial"]["partial"] and not cells["scifact"]["partial"]["partial"]
    from rerank_eval.reporting.compare.chart import comparison_chart

    assert (
        f"Averages over only some of their rows: {headline.name} (partial); "
        in comparison_chart(result).caption
    )


def test_a_run_lacking_every_row_of_an_average_has_no_value_there_and_no_test_said(tmp_path, runs):
    """A run of the forums alone has no BEIR-13 value: the headline shows it missing, as its rows
    are, with no note of an untested comparison (there is no value to compare)."""
    forums = make_result(tmp_path, "forums", 0.02, datasets=["cqadupstack-android", "cqadupstack-english"])
    result = Comparison([load_result(runs["base"]), load_result(forums)])
    headline = next(r for r in result.rows if r.kind == "average")
    assert headline.cells["forums"].value is None and headline.cells["forums"].delta is None
    assert not [note for note in result.footnotes if "in common with the baseline" in note]
    assert "scifact: not in forums" in result.footnotes


@pytest.mark.parametrize("test", ["t-test", "randomization"])
def test_an_average_over_a_single_shared_row_has_no_p_value(tmp_path, runs, test):
    """One pair is no sample: scipy's t-test gives NaN and its permutation test refuses it, so the
    cell is untested (p=n/a, no †) with a note, not p = 1.00 (as shown before)."""
    partial = make_result(tmp_path, "partial", 0.3, datasets=["scifact"])
    result = Comparison([load_result(runs["base"]), load_result(partial)], test=test)
    headline = next(r for r in result.rows if r.kind == "average").cells["partial"]
    assert headline.delta > 0.2 and headline.p_value is None and headline.p_adjusted is None
    assert not headline.significant
    assert (headline.wins, headline.ties, headline.losses) == (1, 0, 0)
    assert (
        f"BEIR-13: partial has a single value to pair with the baseline's, for which the {test} is "
        "undefined (no p-value, no †)"
    ) in result.footnotes
    assert "p=n/a" in markdown(comparison_table(result))


def test_a_run_sharing_no_row_with_the_baseline_is_shown_not_compared(tmp_path, runs):
    """Its average is shown, but nothing is paired: no Δ, test or W/T/L, and it does not enlarge the
    Holm family of the runs that were compared (which once doubled their adjusted p-values)."""
    apart = make_result(tmp_path, "apart", 0.1, datasets=["scifact"])
    base = make_result(tmp_path, "fiqa-base", 0.0, noise=0.0, datasets=["fiqa"])
    better = make_result(tmp_path, "fiqa-better", 0.08, seed=1, datasets=["fiqa"])
    result = Comparison([load_result(base), load_result(better), load_result(apart)])
    headline = next(r for r in result.rows if r.kind == "average")
    shown = headline.cells["apart"]
    assert shown.value is not None
    assert (shown.delta, shown.p_value, shown.p_adjusted, shown.wins) == (None, None, None, None)
    compared = headline.cells["fiqa-better"]
    assert result.families["BEIR-13"] == 1
    assert compared.p_adjusted == compared.p_value is None  # one shared row: untested, as above
    fiqa = next(r for r in result.rows if r.name == "fiqa")
    assert result.families["fiqa"] == 1
    assert fiqa.cells["fiqa-better"].p_adjusted == fiqa.cells["fiqa-better"].p_value
    assert "BEIR-13: apart has no row in common with the baseline fiqa-base: shown, not compared" in (
        result.footnotes
    )


def test_a_group_with_only_some_of_its_members_is_said_so(tmp_path, runs):
    """A run holding one of CQADupStack's two forums has no cqadupstack value (its mean would be
    another row's), and the note says it holds some members, not that the row is absent."""
    some = make_result(tmp_path, "some", 0.02, datasets=["scifact", "fiqa", "cqadupstack-android"])
    result = Comparison([load_result(runs["base"]), load_result(some)])
    group = next(r for r in result.rows if r.name == "cqadupstack")
    assert group.cells["some"].value is None and group.cells["base"].value is not None
    assert "cqadupstack: only some of its members in some (1 of 12), so no value there" in result.footnotes
    assert not any(note.startswith("cqadupstack: not in") for note in result.footnotes)


def test_markdown_rows_carry_w_t_l_and_average_intervals(runs):
    result = comparison(runs, "base", "better")
    lines = markdown(comparison_table(result)).splitlines()
    fiqa = next(r for r in result.rows if r.name == "fiqa").cells["better"]
    fiqa_line = next(line for line in lines if line.startswith("| fiqa "))
    assert fiqa_line.endswith(f" | {fiqa.wins}/{fiqa.ties}/{fiqa.losses} |")
    headline = next(r for r in result.rows if r.name == "BEIR-13").cells["better"]
    low, high = headline.interval
    assert f"[{low:+.4f}, {high:+.4f}]" in next(line for line in lines if line.startswith("| BEIR-13 "))


def test_latex_escapes_every_special_character():
    from rerank_eval.reporting.render.latex import latex_escape

    assert latex_escape("a_b & 50% #1 $x^2 {y} ~z \\ <k>") == (
        r"a\_b \& 50\% \#1 \$x\textasciicircum{}2 \{y\} \textasciitilde{}z \textbackslash{} $<$k$>$"
    )
    # a row name beginning with a bracket stays text (after `\\` it would be a length); a grave
    # accent is not an opening quote
    assert latex_escape("[1em] `t` x") == r"{[}1em{]} \textasciigrave{}t\textasciigrave{} x"


def test_published_columns_are_marked_and_untested(runs):
    result = comparison(runs, "base", "better", published=["pyserini-bm25-flat", "jina-reranker-v3"])
    scifact = next(r for r in result.rows if r.name == "scifact")
    cell = scifact.cells["pyserini-bm25-flat (published)"]
    assert cell.value == 0.6789 and cell.p_value is None and cell.delta is None
    assert scifact.cells["jina-reranker-v3 (published)"].value is None
    assert "first stage: top-100 of jina-embeddings-v3" in "\n".join(caption(result))
    assert "not tested" in "\n".join(caption(result))


def test_a_published_column_with_some_rows_and_no_average_is_no_partial_average(tmp_path, runs, monkeypatch):
    """Figures for scifact alone and no average: the headline shows none for that column (the mean
    of its one row would pass for the paper's average), so nothing calls it a partial average."""
    from rerank_eval.reporting.compare import published

    monkeypatch.setattr(published, "PUBLISHED_DIR", tmp_path)
    figures = {"name": "some", "source": "s", "first_stage": "f", "rows": {"nDCG@10": {"scifact": 0.7}},
               "averages": {}}  # fmt: skip
    (tmp_path / "some.json").write_text(json.dumps(figures))
    result = Comparison([load_result(runs["base"])], published=["some"])
    headline = next(r for r in result.rows if r.kind == "average")
    assert headline.cells["some (published)"].value is None and "some (published)" not in headline.short
    frame = data.long_frame(result)
    assert not frame[frame.partial].size
    from rerank_eval.reporting.compare.chart import comparison_chart

    assert "Averages over only some of their rows" not in comparison_chart(result).caption


def test_a_published_group_figure_is_not_set_beside_part_of_the_group(tmp_path, monkeypatch):
    """Runs holding two of a group's three members: a published column with the whole group's
    figure only shows nothing there; one with its members' figures shows the mean of those two."""
    from rerank_eval.reporting.compare import published

    forums = ["cqadupstack-android", "cqadupstack-english", "cqadupstack-gaming"]
    monkeypatch.setattr(published, "PUBLISHED_DIR", tmp_path)
    for name, rows in [("whole", {"cqadupstack": 0.3}), ("forums", {forums[0]: 0.4, forums[1]: 0.2})]:
        figures = {"name": name, "source": "s", "first_stage": "f", "rows": {"nDCG@10": rows}, "averages": {}}
        (tmp_path / f"{name}.json").write_text(json.dumps(figures))
    made = [
        make_result(tmp_path, n, shift, groups={"cqadupstack": forums}) for n, shift in [("a", 0), ("b", 0.1)]
    ]
    result = Comparison(load_results(made), published=["whole", "forums"])
    row = next(r for r in result.rows if r.name == "cqadupstack")
    assert row.cells["whole (published)"].value is None
    assert row.cells["forums (published)"].value == pytest.approx(0.3)
    assert row.cells["b"].value is not None and row.cells["b"].p_value is not None  # the runs still compare
    assert result.footnotes[-3:] == [
        "cqadupstack: mean over 2 of its 3 members (cqadupstack-android, cqadupstack-english), "
        "not the whole group's figure",
        "cqadupstack: whole (published) has only the whole group's figure, not shown",
        "cqadupstack: forums (published) is the mean of its figures for those members",
    ]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("../published/jina-reranker-v3", " (did you mean 'jina-reranker-v3'?)"),
        ("/etc/passwd", ""),
        ("jina-reranker-v33", " (did you mean 'jina-reranker-v3'?)"),
    ],
)
def test_published_takes_a_packaged_name_never_a_path(runs, tmp_path, name, hint):
    """A name is looked up in the packaged list: a path would open any .json file (one that is not
    a figures file once ended in a traceback)."""
    (tmp_path / "figures.json").write_text("not json")
    for given in (name, str(tmp_path / "figures")):
        with pytest.raises(UserError, match=r"^no published results named ") as refused:
            comparison(runs, "base", published=[given])
    assert str(refused.value).startswith(f"no published results named {str(tmp_path / 'figures')!r}; known: ")
    with pytest.raises(UserError) as refused:
        comparison(runs, "base", published=[name])
    assert str(refused.value).startswith(
        f"no published results named {name!r}{hint}; known: bge-reranker-v2-m3, "
    )


def test_published_figures_are_not_set_beside_another_version_of_a_dataset(tmp_path):
    """Pyserini's scifact figure is of its test split: beside a run on the train split it is not
    shown (the key alone matched once), while fiqa's, of the same data, is."""
    folder = make_result(tmp_path, "train", 0.0)
    manifest = json.loads((folder / "manifest.json").read_text())
    for record in manifest["datasets"]:
        if record["key"] == "scifact":
            record["ir_datasets_id"] = "beir/scifact/train"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    result = Comparison(load_results([folder]), published=["pyserini-bm25-flat"])
    cells = {row.name: row.cells["pyserini-bm25-flat (published)"].value for row in result.rows}
    assert cells["scifact"] is None and cells["fiqa"] == 0.2361
    assert (
        "scifact: the runs read it as beir/scifact/train, not the data published figures are of; none shown"
        in (result.footnotes)
    )
    # nor beside an average over that row: all of BEIR-13, scifact read as its train split
    headline = [d.key for d in load_config().suite("beir").datasets if d.in_average]
    for name, scifact in [("all-test", "beir/scifact/test"), ("all-train", "beir/scifact/train")]:
        writer = ResultWriter(tmp_path / name)
        records = []
        for key in headline:
            for stage in ("first_stage", "reranked"):
                writer.add_values(key, stage, {"nDCG@10": {"q1": 0.5, "q2": 0.25}})
            records.append({"key": key, "ir_datasets_id": scifact if key == "scifact" else BEIR_IDS[key],
                            "in_average": True, "drop_self_matches": False,
                            "first_stage": {"kind": "hub", "label": "BM25", "sha256": "a", "settings": None},
                            "coverage": {"judged_queries": 2, "queries_without_run": 0},
                            "timings": {"rerank_seconds": 1.0}})  # fmt: skip
        manifest = {"protocol": {"top_k": 100, "metrics": ["nDCG@10"], "measures": ["nDCG@10"],
                                 "candidate_order": "first-stage"},
                    "suite": {"name": "beir", "average_label": "BEIR-13", "average_rows": sorted(headline)},
                    "model": {"name": name}, "datasets": records}  # fmt: skip
        published = Comparison(
            load_results([writer.publish(manifest, summarize)]), published=["jina-reranker-v3"]
        )
        row = next(row for row in published.rows if row.name == "BEIR-13")
        assert row.cells["jina-reranker-v3 (published)"].value == (0.6194 if name == "all-test" else None)


def test_a_measure_the_results_lack_is_named_with_the_ones_they_have(runs):
    with pytest.raises(UserError) as refused:
        comparison(runs, "base", metric="ndcg@10")
    assert str(refused.value) == (
        f"{runs['base']} has no per-query values for ndcg@10 (did you mean 'nDCG@10'?); it has: nDCG@10"
    )


def test_the_caption_says_which_run_had_which_first_stage_where_they_differ(runs, tmp_path):
    dense = {"kind": "dense", "label": "jina-embeddings-v3 (dense)", "name": "jina-embeddings-v3",
             "sha256": "d1", "settings": {"encoder": "x"}}  # fmt: skip
    on_dense = make_result(tmp_path, "on-dense", 0.05, first_stage=dense)
    forced = Comparison(load_results([runs["base"], on_dense]), force=True)
    assert "First stages: base: BM25; on-dense: jina-embeddings-v3 (dense)." in caption(forced)
    assert not any(line.startswith("First stages") for line in caption(comparison(runs, "base", "worse")))


def test_published_given_twice_is_one_column(runs):
    result = comparison(runs, "base", published=["jina-reranker-v3", "jina-reranker-v3"])
    assert result.labels == ["base", "jina-reranker-v3 (published)"]


def test_published_figures_are_said_to_share_the_runs_first_stage_or_not(runs, tmp_path):
    dense = {"kind": "dense", "label": "jina-embeddings-v3 (dense)", "name": "jina-embeddings-v3",
             "sha256": "d1", "settings": {"encoder": "x"}}  # fmt: skip
    on_bm25 = Comparison(load_results([runs["base"]]), published=["jina-reranker-v3"])
    assert any("reranked jina-embeddings-v3's candidates; the runs did not" in w for w in on_bm25.warnings)
    assert "first stage: BM25" in comparison_table(on_bm25).title
    from rerank_eval.reporting.compare.chart import chart_caption  # a figure for a paper says it too

    assert "WARNING: jina-reranker-v3 (published) reranked jina-embeddings-v3's" in chart_caption(
        on_bm25, False
    )
    folder = make_result(tmp_path, "dense", 0.05, first_stage=dense)
    on_dense = Comparison(load_results([folder]), published=["jina-reranker-v3"])
    assert not on_dense.warnings
    assert (
        on_dense.footnotes[-1]
        == "jina-reranker-v3 (published) and the runs share the first stage jina-embeddings-v3"
    )
    assert "first stage: jina-embeddings-v3 (dense)" in comparison_table(on_dense).title
    # a published column that names no first stage entry says nothing either way
    assert not Comparison(load_results([folder]), published=["pyserini-bm25-flat"]).warnings
    # the other rerankers of the paper's table reranked the same candidates
    on_bm25 = Comparison(load_results([runs["base"]]), published=["bge-reranker-v2-m3"])
    assert any("reranked jina-embeddings-v3's candidates; the runs did not" in w for w in on_bm25.warnings)
    # the same first stage at another depth is other candidates
    shallow = make_result(tmp_path, "shallow", 0.05, first_stage=dense, top_k=20)
    assert Comparison(load_results([shallow]), published=["jina-reranker-v3"]).warnings == [
        "jina-reranker-v3 (published) reranked the top-100 of jina-embeddings-v3; the runs reranked its "
        "top-20 (rerun with --top-k 100 to compare on the same candidates)"
    ]
    # a user's entry of that name but another kind is not the paper's first stage
    renamed = make_result(tmp_path, "renamed", 0.05, first_stage={**dense, "kind": "bm25s"})
    warnings = Comparison(load_results([renamed]), published=["jina-reranker-v3"]).warnings
    assert any("reranked jina-embeddings-v3's candidates; the runs did not" in w for w in warnings)


def test_compare_command_writes_every_export(runs, tmp_path):
    outputs = {f: tmp_path / f"out.{f}" for f in ("csv", "md", "tex", "json", "png")}
    result = CliRunner().invoke(app, [
        "compare", str(runs["base"]), str(runs["better"]), "--baseline", "base",
        "--published", "pyserini-bm25-flat",
        "--csv", str(outputs["csv"]), "--markdown", str(outputs["md"]), "--latex", str(outputs["tex"]),
        "--json", str(outputs["json"]), "--plot", str(outputs["png"]),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "better" in result.output and "W/T/L" in result.output
    assert all(p.exists() and p.stat().st_size > 0 for p in outputs.values())
    assert json.loads(outputs["json"].read_text())["baseline"] == "base"
    latex = outputs["tex"].read_text()
    assert "\\begin{tabular}{lrrrr}" in latex
    assert (
        "\\caption{Comparison: nDCG@10; first stage: BM25. \\\\ nDCG@10, reranked. $\\Delta$ vs base" in latex
    )
    assert "Holm--Bonferroni" in latex and "W/T/L" in latex
    markdown = outputs["md"].read_text()
    assert markdown.startswith(
        "**Comparison: nDCG@10; first stage: BM25**\n\n"
        "| Dataset | base (baseline) | better | W/T/L | pyserini-bm25-flat (published), first stage: "
    )


def test_captions_count_the_runs_compared_against_the_baseline(runs, tmp_path):
    """One result alone has nothing to test against: no Δ, no p-values, no "0 compared runs";
    one result against the baseline is "1 compared run"."""
    alone, pair = tmp_path / "alone.md", tmp_path / "pair.md"
    for folders, out in (([runs["base"]], alone), ([runs["base"], runs["better"]], pair)):
        result = CliRunner().invoke(app, ["compare", *map(str, folders), "--markdown", str(out)])
        assert result.exit_code == 0, result.output
    assert "nDCG@10, reranked.  " in alone.read_text()
    assert "p-value" not in alone.read_text() and "compared run" not in alone.read_text()
    assert "Holm–Bonferroni-adjusted across the 1 compared run);" in pair.read_text()


def test_compare_refuses_incomplete_results(tmp_path, runs):
    incomplete = tmp_path / "x.incomplete"
    incomplete.mkdir()
    result = CliRunner().invoke(app, ["compare", str(runs["base"]), str(incomplete)])
    assert result.exit_code == 2 and "incomplete" in result.output


def test_an_unfinished_model_in_a_models_folder_is_left_out_with_a_warning(tmp_path, runs):
    """A stale `.incomplete` folder (a process killed outright) never blocks comparing the rest."""
    import shutil

    parent = tmp_path / "models"
    shutil.copytree(runs["base"], parent / "bm25")
    (parent / "slow.incomplete").mkdir()
    # killed after writing its manifest, before publishing: still not a result
    shutil.copytree(runs["better"], parent / "written.incomplete")
    for command in (["compare", str(parent), str(runs["better"])], ["export", str(parent)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        unfinished = "(slow.incomplete, written.incomplete"
        assert f"warning: {parent} holds an incomplete result {unfinished}" in result.output
        assert "left out" in result.output
        assert "written" not in result.output.replace("written.incomplete", "")
    shutil.rmtree(parent / "bm25")
    alone = CliRunner().invoke(app, ["export", str(parent)])
    assert alone.exit_code == 2 and alone.output.strip() == (
        f"error: {parent} holds only incomplete results (slow.incomplete, written.incomplete: their runs "
        "did not finish); run the same command again to finish them"
    )


def test_results_past_a_bound_in_all_are_refused_before_any_is_parsed(tmp_path, runs, monkeypatch):
    """Each result is bounded, and so are all those one command reads: a folder from elsewhere may
    hold thousands of models' results."""
    import shutil

    from rerank_eval.results import folder as results

    parent = tmp_path / "models"
    for name in ("a", "b", "c"):
        shutil.copytree(runs["base"], parent / name)
    each = (parent / "a" / "per_query.csv").stat().st_size
    monkeypatch.setattr(results, "PER_QUERY_LIMIT_IN_ALL", 3 * each)
    assert len(load_results([parent])) == 3  # at the bound: read
    monkeypatch.setattr(results, "PER_QUERY_LIMIT_IN_ALL", 3 * each - 1)
    monkeypatch.setattr(results, "load_result", lambda folder: pytest.fail(f"parsed {folder}"))
    result = CliRunner().invoke(app, ["compare", str(parent), str(runs["base"])])
    assert result.exit_code == 2 and result.output == (
        f"error: the 4 results given hold {4 * each:,} bytes of per-query values in all, more than "
        f"{3 * each - 1:,}; give fewer at a time\n"
    )


def test_a_foreign_manifest_is_one_clear_error(tmp_path, runs):
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(runs["base"], foreign)
    (foreign / "manifest.json").write_text('{"x": 1}')
    result = CliRunner().invoke(app, ["export", str(foreign)])
    assert result.exit_code == 2
    manifest = foreign / "manifest.json"
    assert result.output.strip() == (
        f"error: {manifest} is not a rerank-eval manifest (no protocol, suite, model, datasets)"
    )


@pytest.mark.parametrize("option", ["--markdown", "--plot", "--latex"])
def test_an_unwritable_export_path_is_one_clear_error(runs, tmp_path, option):
    target = tmp_path / "no" / "such" / "dir" / "out.png"
    result = CliRunner().invoke(app, ["compare", str(runs["base"]), str(runs["better"]), option, str(target)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot write {target}: its folder {target.parent} does not exist"
    assert not target.parent.exists()  # refused before anything was computed or printed


def test_a_plot_in_an_unknown_format_is_one_clear_error(runs, tmp_path):
    target = tmp_path / "plot.bmpx"
    result = CliRunner().invoke(app, ["compare", str(runs["base"]), str(runs["better"]), "--plot", target])
    assert result.exit_code == 2
    assert f"error: --plot {target}: the file name must end in one of" in result.output
    assert ".png" in result.output and not list(tmp_path.iterdir())


def test_a_figure_is_the_same_bytes_each_time_and_draws_names_as_written(tmp_path, monkeypatch):
    """A PDF held its creation time and an SVG its date and random element ids, so the same
    command gave other bytes; a name holding `$...$` was parsed as mathematics, a traceback after
    the other outputs were written. Now: identical files a second later, and an output that fails
    to render leaves none of the command's outputs written."""
    import time

    from rerank_eval.reporting.render.plot import FORMATS

    base = make_result(tmp_path, "base $\\input{x}$", 0.0, noise=0.0)
    other = make_result(tmp_path, "a$b", 0.05, seed=4)
    outputs = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        out.mkdir()
        args = ["compare", str(base), str(other), "--csv", str(out / "t.csv")]
        for suffix in FORMATS:
            result = CliRunner().invoke(app, [*args, "--plot", str(out / f"figure.{suffix}")])
            assert result.exit_code == 0, result.output
        outputs.append({p.name: p.read_bytes() for p in out.iterdir()})
        time.sleep(1.1)  # (a PDF's date is to the second)
    assert outputs[0] == outputs[1] and len(outputs[0]) == len(FORMATS) + 1

    from rerank_eval.reporting.render import plot

    def broken(chart, file_format):
        raise UserError("the figure cannot be drawn")

    monkeypatch.setattr(plot, "figure_file", broken)
    out = tmp_path / "third"
    out.mkdir()
    result = CliRunner().invoke(
        app, ["compare", str(base), str(other), "--csv", str(out / "t.csv"), "--plot", str(out / "f.png")]
    )
    assert result.output.strip().splitlines()[-1] == "error: the figure cannot be drawn"
    assert not list(out.iterdir())


def test_export_csv_to_an_unwritable_path_is_one_clear_error(runs, tmp_path):
    target = tmp_path / "missing" / "summary.csv"
    result = CliRunner().invoke(app, ["export", str(runs["base"]), "--csv", str(target)])
    assert result.exit_code == 2 and f"error: cannot write {target}" in result.output


def test_labels_and_names_are_shown_literally_never_as_markup(tmp_path):
    from rich.console import Console

    first = make_result(tmp_path, "ckpt[v1]", 0.0, noise=0.0)
    second = make_result(tmp_path, "ckpt[v2]", 0.05, seed=4)
    console = Console(width=300, record=True)
    console.print(terminal_table(comparison_table(Comparison([load_result(first), load_result(second)]))))
    text = console.export_text()
    assert "ckpt[v1] (baseline)" in text and "ckpt[v2]" in text and "Δ vs ckpt[v1]" in text


def test_runs_sharing_a_model_name_keep_their_own_columns(tmp_path):
    """Two folders of several models' results with the same model names: each model's folder name
    is shared too, so labels take as much of the path as tells them apart, and every cell holds its
    own run's values (the labels once collided and one run's values showed under the other's)."""
    made = [
        make_result(tmp_path / "one", "bm25", 0.0, noise=0.0),
        make_result(tmp_path / "one", "ce", 0.08, seed=1),
        make_result(tmp_path / "two", "bm25", 0.0, noise=0.05, seed=2),
        make_result(tmp_path / "two", "ce", -0.03, seed=3),
    ]
    result = Comparison(load_results([tmp_path / "one", tmp_path / "two"]))
    assert result.labels == ["one/bm25", "one/ce", "two/bm25", "two/ce"]
    scifact = next(r for r in result.rows if r.name == "scifact")
    for label, folder in zip(result.labels, made, strict=True):
        assert scifact.cells[label].value == pytest.approx(values(folder, "scifact").mean())
    assert scifact.cells["one/bm25"].delta is None and scifact.cells["two/bm25"].delta is not None
    # the folder name alone names two runs: one line asks for a label
    with pytest.raises(UserError, match=r"'bm25' names 2 of the compared runs; give one of one/bm25, one/ce"):
        Comparison(load_results([tmp_path / "one", tmp_path / "two"]), baseline="bm25")
    chosen = Comparison(load_results([tmp_path / "one", tmp_path / "two"]), baseline="two/ce")
    assert chosen.baseline.label == "two/ce"
    # labels follow the paths as given: a symlink's name, not its target's
    (tmp_path / "latest").symlink_to(tmp_path / "one")
    (tmp_path / "previous").symlink_to("two")
    linked = Comparison(load_results([tmp_path / "latest", tmp_path / "previous"]))
    assert linked.labels == ["latest/bm25", "latest/ce", "previous/bm25", "previous/ce"]
    with pytest.raises(UserError, match="is given twice"):
        Comparison(load_results([tmp_path / "latest", tmp_path / "one"]))


def test_rows_and_averages_do_not_depend_on_which_result_comes_first(tmp_path):
    """A result of some datasets first: the rows still follow the suite's order (fiqa, which only
    the later result has, first as in BEIR) and the headline average is the whole suite's,
    as any result of the suite says which rows are (once, only the first one's counted)."""
    full = make_result(tmp_path, "full", 0.0)
    part = make_result(tmp_path, "part", 0.05, datasets=["scifact", "cqadupstack-android"], seed=4)
    orders = [Comparison(load_results(folders)) for folders in ([part, full], [full, part])]
    for result in orders:
        assert [row.name for row in result.rows] == [
            "fiqa",
            "cqadupstack",
            "scifact",
            "BEIR-13",
            "Average, all 3 rows",
        ]
        headline = next(row for row in result.rows if row.name == "BEIR-13")
        assert headline.cells["full"].value == pytest.approx(
            np.mean([values(full, "scifact").mean(), values(full, "fiqa").mean()])
        )
    assert "BEIR-13: part averages 1 of 2 rows (not marked best)" in orders[0].footnotes
    # its higher mean over scifact alone is not ranked against the full run's over both rows
    table = comparison_table(orders[0])
    headline = next(row for row in table.rows if row[0].value == "BEIR-13")
    labels = [column.label for column in table.columns]
    part, full = headline[labels.index("part")], headline[labels.index("full")]
    assert float(part.value) > float(full.value) and not part.bold and full.bold


def test_latex_keeps_double_hyphens_and_bars_as_written():
    """Pyserini's `--bm25` (a published source) would become an en dash, `|` an em dash."""
    from rerank_eval.reporting.render.latex import latex_escape

    assert latex_escape("--bm25 --hits a|b – c") == r"-{}-bm25 -{}-hits a\textbar{}b -- c"


def test_json_and_long_csv_say_what_they_were_computed_with(runs, tmp_path):
    """The JSON names its format, the test's settings and each run's protocol; every cell says
    whether it is significant, and untested cells (baseline, published) say nothing either way, in
    the JSON as in the long CSV, which names its metric."""
    import csv

    result = comparison(runs, "base", "better", published=["pyserini-bm25-flat"], metric="nDCG@10")
    payload = json.loads(data.comparison_json(result))
    assert {key: payload[key] for key in ("format", "alpha", "seed", "resamples", "test")} == {
        "format": 2, "alpha": 0.05, "seed": SEED, "resamples": 10_000, "test": "t-test"
    }  # fmt: skip
    assert payload["runs"][1] | {"path": None} == {
        "label": "better", "folder": "better", "path": None, "model": "better", "first_stages": ["BM25"],
        "top_k": 100, "candidate_order": "first-stage",
    }  # fmt: skip
    assert payload["runs"][1]["path"] == str(runs["better"].absolute())
    scifact = next(row for row in payload["rows"] if row["dataset"] == "scifact")["cells"]
    tested = next(r for r in result.rows if r.name == "scifact").cells["better"]
    assert scifact["better"]["significant"] == tested.significant
    assert scifact["base"]["significant"] is None
    assert scifact["pyserini-bm25-flat (published)"]["significant"] is None
    lines = list(csv.DictReader(data.comparison_csv(result).splitlines()))
    assert {line["metric"] for line in lines} == {"nDCG@10"}
    by_run = {line["run"]: line for line in lines if line["dataset"] == "scifact"}
    assert by_run["base"]["significant"] == by_run["pyserini-bm25-flat (published)"]["significant"] == ""
    assert by_run["better"]["significant"] == str(tested.significant)


def test_results_sharing_no_dataset_keep_the_suites_order(tmp_path):
    """Once a later result's datasets went to the top when the first shared none of them."""
    one = make_result(tmp_path, "one", 0.0, datasets=["scifact", "cqadupstack-android"])
    two = make_result(tmp_path, "two", 0.05, datasets=["fiqa", "cqadupstack-english"], seed=4)
    for folders in ([one, two], [two, one]):
        result = Comparison(load_results(folders), force=True)
        assert [row.name for row in result.rows][:3] == ["fiqa", "cqadupstack", "scifact"]


def test_another_suites_rows_are_not_the_baselines_headline_and_groups_are_the_packaged_ones(tmp_path):
    """A result of a user's suite whose cqadupstack holds two forums and puts them in its average:
    beside a BEIR baseline its rows do not enter BEIR-13, and whichever comes first, Pyserini's
    twelve-forum figure is not set beside two forums (their own figures' mean is)."""
    beir = make_result(tmp_path, "beir", 0.0)
    mine = make_result(tmp_path, "mine", 0.05, seed=4)
    manifest = json.loads((mine / "manifest.json").read_text())
    manifest["suite"] = {
        "name": "mine",
        "average_label": "Mine",
        "average_rows": ["cqadupstack", "fiqa", "scifact"],
        "groups": {"cqadupstack": ["cqadupstack-android", "cqadupstack-english"]},
    }
    for record in manifest["datasets"]:
        record["in_average"] = True
    (mine / "manifest.json").write_text(json.dumps(manifest))
    for folders in ([beir, mine], [mine, beir]):
        result = Comparison(load_results(folders), published=["pyserini-bm25-flat"], force=True)
        names = [row.name for row in result.rows]
        cqadupstack = next(row for row in result.rows if row.name == "cqadupstack")
        assert cqadupstack.cells["pyserini-bm25-flat (published)"].value == pytest.approx(
            (0.3801 + 0.3453) / 2
        )
        if folders[0] == beir:
            assert names[-2:] == ["BEIR-13", "Average, all 3 rows"]  # cqadupstack outside BEIR-13
        else:
            assert names[-1] == "Mine"


def suite_of(folder: Path, **suite) -> Path:
    """`folder`'s result as a run of another suite (its manifest's suite record replaced)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["suite"] = {"average_rows": [], **suite}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_a_part_of_a_group_is_told_whichever_results_suite_says_so(tmp_path):
    """The baseline's own suite knows no group; the other result's packaged BEIR says cqadupstack
    has twelve forums: the two-forum row is still said to be a part. A suite that records having
    no group is not given the packaged ones."""
    mine = suite_of(make_result(tmp_path, "mine", 0.0), name="mine", average_label="Mine", groups={})
    beir = make_result(tmp_path, "beir", 0.05, seed=4, groups={"cqadupstack": BEIR_FORUMS})
    result = Comparison(load_results([mine, beir]), force=True)
    assert any(note.startswith("cqadupstack: mean over 2 of its 12 members") for note in result.footnotes)
    alone = Comparison(load_results([suite_of(make_result(tmp_path, "own", 0.0), name="beir",
                                              average_label="BEIR-13", groups={})]))  # fmt: skip
    assert not any("members" in note for note in alone.footnotes)


def test_a_published_average_stands_only_beside_the_packaged_suites_whole_headline(runs):
    """The fixtures' suite calls fiqa and scifact its BEIR-13: complete for it, but not the
    thirteen datasets jina-reranker-v3's 0.6194 is the mean of."""
    result = comparison(runs, "base", published=["jina-reranker-v3"])
    headline = next(row for row in result.rows if row.name == "BEIR-13")
    assert headline.cells["jina-reranker-v3 (published)"].value is None


def test_a_result_given_twice_is_refused(runs):
    again = runs["base"].parent / "." / runs["base"].name
    result = CliRunner().invoke(app, ["compare", str(runs["base"]), str(runs["better"]), str(again)])
    assert result.exit_code == 2
    assert (
        result.output == f"error: the result {runs['base'].resolve()} is given twice; give each result once\n"
    )


def test_latex_sets_negative_deltas_with_a_minus_sign(runs):
    from rerank_eval.reporting.render.latex import latex

    text = latex(comparison_table(comparison(runs, "base", "worse")))
    scifact = next(line for line in text.splitlines() if line.startswith("scifact & "))
    assert "($-$0.0" in scifact and "(-" not in scifact
    headline = next(line for line in text.splitlines() if line.startswith("BEIR-13 & "))
    assert "{[}$-$0.0" in headline and "BEIR-13 &" in headline  # the row's own name keeps its hyphen


def test_an_average_of_rows_with_one_difference_has_no_t_test(tmp_path, monkeypatch):
    """Two average rows holding the same data differ from the baseline by one value: the t-test
    divides by their spread, zero but for rounding, and scipy returned p<0.001 (a †). Now the test
    is undefined there, said in a note; the randomization test's p is exact (2 of 4 sign flips)."""
    monkeypatch.setitem(QUERIES, "scifact", QUERIES["fiqa"])
    monkeypatch.setitem(BASE, "scifact", BASE["fiqa"])
    folders = [make_result(tmp_path, name, shift, noise=0.0, datasets=["fiqa", "scifact"])
               for name, shift in (("base", 0.0), ("plus", 0.05))]  # fmt: skip
    result = Comparison([load_result(f) for f in folders])
    headline = next(r for r in result.rows if r.name == "BEIR-13").cells["plus"]
    assert headline.delta > 0.04 and headline.p_value is None and not headline.significant
    assert "| BEIR-13 | 0.3598 | **0.4058** (+0.0460, p=n/a) | 2/0/0 |" in markdown(comparison_table(result))
    assert "BEIR-13: plus's differences from the baseline are all one value, for which the t-test is " \
        "undefined (no p-value, no †)" in " ".join(caption(result))  # fmt: skip
    fiqa = next(r for r in result.rows if r.name == "fiqa").cells["plus"]
    assert fiqa.p_value == pytest.approx(
        stats.ttest_rel(values(folders[1], "fiqa"), values(folders[0], "fiqa")).pvalue
    )
    # a run beside it is adjusted as one of two compared runs: the undefined test counts, as p = 1
    folders.append(make_result(tmp_path, "noisy", 0.05, noise=0.02, seed=5, datasets=["fiqa", "scifact"]))
    noisy = next(r for r in Comparison([load_result(f) for f in folders]).rows if r.name == "BEIR-13")
    assert noisy.cells["plus"].p_adjusted is None
    assert noisy.cells["noisy"].p_adjusted == pytest.approx(min(1.0, 2 * noisy.cells["noisy"].p_value))
    assert noisy.cells["noisy"].p_value < 0.5  # so that the factor shows
    randomized = Comparison([load_result(f) for f in folders[:2]], test="randomization")
    assert next(r for r in randomized.rows if r.name == "BEIR-13").cells["plus"].p_value == 0.5


def test_the_same_values_listed_in_another_order_are_the_same_result(runs, tmp_path):
    """A row's mean is summed exactly: the same per-query values in another order once differed in
    the last bit, and an average row then showed a significant difference between equal results."""
    import shutil

    from rerank_eval.reporting.compare.table import caption

    shuffled = tmp_path / "shuffled"
    shutil.copytree(runs["base"], shuffled)
    frame = pd.read_csv(shuffled / "per_query.csv", dtype={"query_id": str}, keep_default_na=False)
    rng = np.random.default_rng(7)
    for _ in range(100):  # an order whose plain float sum differs in the last bit
        order = rng.permutation(len(frame))
        moved = frame.iloc[order]
        if any(
            moved[moved.dataset == d].value.sum() != frame[frame.dataset == d].value.sum()
            for d in ("fiqa", "scifact")
        ):
            break
    else:
        raise AssertionError("no order changes a float sum")
    moved.to_csv(shuffled / "per_query.csv", index=False)
    builders.reseal(shuffled)
    for test in ("t-test", "randomization"):
        result = Comparison([load_result(runs["base"]), load_result(shuffled)], test=test)
        for row in result.rows:
            cell = row.cells["shuffled"]
            assert cell.value == row.cells["base"].value and cell.delta == 0.0, row.name
            assert cell.p_value == 1.0 and cell.losses == 0 and cell.wins == 0 and not cell.significant
    assert "across the 1 compared run)" in caption(result)[0]


def test_differences_equal_up_to_rounding_get_neither_p_value_nor_interval():
    """The t-test and the bootstrap read "one value" the same way (the interval [c, c] used to be
    shown beside p=n/a where the differences differed in the last bit only)."""
    from rerank_eval.reporting.compare.stats import bootstrap_interval, paired_p_value

    baseline = np.array([0.2, 0.4, 0.6])
    differences = np.array([0.01, np.nextafter(0.01, 1.0), 0.01])
    assert paired_p_value(baseline + differences, baseline, "t-test") is None
    assert bootstrap_interval(differences) is None
    spread = np.array([0.01, 0.02, 0.0])
    low, high = bootstrap_interval(spread)
    assert 0.0 <= low < high <= 0.02


def test_the_caption_says_holms_family_is_the_runs_a_row_has(tmp_path):
    from rerank_eval.reporting.compare.table import caption

    full = [make_result(tmp_path, n, s, seed=i) for i, (n, s) in enumerate((("a", 0.0), ("b", 0.05)))]
    fewer = make_result(tmp_path, "c", 0.02, seed=5, datasets=["scifact", "fiqa"])
    whole = caption(Comparison([load_result(f) for f in full]))[0]
    assert "Holm–Bonferroni-adjusted across the 1 compared run)" in whole
    lacking = caption(Comparison([load_result(f) for f in (*full, fewer)]))[0]
    assert "Holm–Bonferroni-adjusted across the compared runs each row has (2 where it has all)" in lacking


def test_a_run_labelled_like_a_published_column_keeps_its_own_values(tmp_path):
    """Cells are found by label: a run whose model name (or, where names are shared, folder path)
    is a published column's label once showed the published figure as its own value, and a Δ
    against its own. It takes its folder's name instead; a label from a path prints control
    characters as escapes (a terminal would act on them, a table row would break)."""
    published = "pyserini-bm25-flat (published)"
    base = make_result(tmp_path, "base", 0.0, noise=0.0)
    mimic = make_result(tmp_path / "shared", published, 0.05, seed=4)
    result = Comparison(load_results([base, mimic]), published=["pyserini-bm25-flat"])
    assert result.labels == ["base", f"shared/{published}", published]
    scifact = next(r for r in result.rows if r.name == "scifact")
    assert scifact.cells[f"shared/{published}"].value == pytest.approx(values(mimic, "scifact").mean())
    assert scifact.cells[published].value == 0.6789  # the published BM25 flat figure
    make_result(tmp_path / "plain", "base", 0.02, seed=5)  # (the writer refuses such a name)
    twin = (tmp_path / "plain").rename(tmp_path / "x\x1b[31m\nre\u202ed") / "base"
    escaped = Comparison(load_results([base, twin]))
    assert escaped.labels == [f"{tmp_path.name}/base", "x\\x1b[31m\\nre\\u202ed/base"]
