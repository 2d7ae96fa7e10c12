"""Rules of `rerank-eval compare`'s computation a mutation round found untested: a published column
for another measure, the caption of a column without notes, the note on a published average worked
out from its rows, a run sharing no row with the baseline ahead of one that does, a row whose
queries a run shares none of, and no published-data note where no published column is shown."""

from __future__ import annotations

import numpy as np
import pytest

from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.table import caption
from rerank_eval.results.folder import load_result, load_results
from tests.test_comparison import BEIR_IDS, QUERIES, make_result
from tests.test_published_figures import figures, result


def test_a_published_column_without_figures_for_the_measure_shows_none(tmp_path, monkeypatch):
    """Figures for Recall@100 only, compared on nDCG@10: the column is shown empty (its file has
    nothing of that measure), not a crash over the missing measure."""
    figures(tmp_path, monkeypatch, "recall", rows={"Recall@100": {"scifact": 0.9, "fiqa": 0.8}},
            averages={"Recall@100": {"BEIR-13": 0.85}})  # fmt: skip
    made = result(tmp_path, "run", ["scifact", "fiqa"])
    compared = Comparison(load_results([made]), published=["recall"])
    assert compared.published[0].rows == {} and compared.published[0].averages == {}
    assert [row.cells["recall (published)"].value for row in compared.rows] == [None] * len(compared.rows)


def test_a_published_column_without_notes_is_captioned_with_nothing_after_its_source(tmp_path, monkeypatch):
    """A figures file that says no more than its source and first stage: its caption line ends
    there, with nothing made up for the notes it does not have."""
    figures(tmp_path, monkeypatch, "plain", source="Table 2", first_stage="BM25 flat",
            rows={"nDCG@10": {"scifact": 0.7}})  # fmt: skip
    made = result(tmp_path, "run", ["scifact"])
    lines = caption(Comparison(load_results([made]), published=["plain"]))
    assert [line for line in lines if line.startswith("plain (published)")] == [
        "plain (published): Table 2; first stage: BM25 flat; not tested."
    ]


def test_a_published_average_of_all_its_rows_is_their_mean_and_said_so(tmp_path, monkeypatch):
    """A column with figures for every row of an average and no average of its own: the average
    shows the mean of those figures, and a note says it is that mean (not a figure the source
    published)."""
    figures(tmp_path, monkeypatch, "rows", rows={"nDCG@10": {"scifact": 0.7, "fiqa": 0.4}})
    made = make_result(tmp_path, "run", 0.0, datasets=["scifact", "fiqa"])  # its suite averages these two
    compared = Comparison(load_results([made]), published=["rows"])
    headline = next(row for row in compared.rows if row.kind == "average")
    assert headline.cells["rows (published)"].value == pytest.approx((0.7 + 0.4) / 2)
    assert f"{headline.name}: rows (published) is the mean of its published rows" in compared.footnotes
    assert None not in compared.footnotes


def test_a_run_sharing_no_row_with_the_baseline_does_not_stop_the_next_runs_test(tmp_path):
    """[baseline on fiqa, a run on scifact alone, a run on fiqa]: the second run is shown, not
    compared, and the third is still compared on the average, over the one row it shares (its Δ is
    its fiqa Δ, and it alone is Holm's family there)."""
    base = make_result(tmp_path, "fiqa-base", 0.0, noise=0.0, datasets=["fiqa"])
    apart = make_result(tmp_path, "apart", 0.1, datasets=["scifact"])
    better = make_result(tmp_path, "fiqa-better", 0.08, seed=1, datasets=["fiqa"])
    result = Comparison([load_result(base), load_result(apart), load_result(better)])
    per_query = {
        folder.name: load_result(folder).per_query.query("dataset == 'fiqa' and stage == 'reranked'")
        for folder in (base, better)
    }
    fiqa_delta = np.mean(per_query["fiqa-better"].value) - np.mean(per_query["fiqa-base"].value)
    headline = next(r for r in result.rows if r.kind == "average")
    assert headline.cells["apart"].delta is None
    compared = headline.cells["fiqa-better"]
    assert compared.delta == pytest.approx(fiqa_delta)
    assert (compared.wins, compared.ties, compared.losses) == (int(fiqa_delta > 0), 0, int(fiqa_delta < 0))
    assert result.families[headline.name] == 1


def test_a_row_sharing_no_query_with_the_baseline_is_shown_not_compared(tmp_path):
    """Forced over fiqa's queries renamed, all of them: fiqa's value is shown, with nothing paired
    (no Δ, test or W/T/L), out of fiqa's Holm family, and a note says so; scifact still compares,
    and so does a run listed after it on fiqa."""
    base = make_result(tmp_path, "base", 0.0, noise=0.0, datasets=["scifact", "fiqa"])
    renamed = {**QUERIES, "fiqa": [f"other-{q}" for q in QUERIES["fiqa"]]}
    other = make_result(tmp_path, "other", 0.05, queries=renamed, seed=4, datasets=["scifact", "fiqa"])
    later = make_result(tmp_path, "later", 0.05, seed=5, datasets=["scifact", "fiqa"])
    result = Comparison([load_result(base), load_result(other), load_result(later)], force=True)
    by_name = {row.name: row for row in result.rows}
    fiqa = by_name["fiqa"].cells["other"]
    assert fiqa.value is not None
    assert (fiqa.delta, fiqa.p_value, fiqa.p_adjusted, fiqa.wins) == (None, None, None, None)
    assert result.families["fiqa"] == 1 and result.families["scifact"] == 2
    assert (
        "fiqa: other has no query in common with the baseline base: shown, not compared" in result.footnotes
    )
    assert by_name["scifact"].cells["other"].delta is not None
    compared = by_name["fiqa"].cells["later"]
    assert compared.delta == pytest.approx(compared.value - by_name["fiqa"].cells["base"].value)
    assert compared.p_value is not None and compared.p_adjusted == compared.p_value  # a family of one


def test_a_row_with_a_single_query_to_pair_is_said_to_have_no_p_value(tmp_path):
    """Forced over a run holding one of scifact's queries (scored otherwise than the baseline): one
    pair is no sample, so scifact's test is undefined for that run, and the note names that row
    and that run, as the average's does."""
    base = make_result(tmp_path, "base", 0.0, noise=0.0, datasets=["scifact", "fiqa"])
    one = make_result(
        tmp_path, "one", 0.0, queries={**QUERIES, "scifact": ["s2"]}, datasets=["scifact", "fiqa"]
    )
    result = Comparison([load_result(base), load_result(one)], force=True)
    cell = next(r for r in result.rows if r.name == "scifact").cells["one"]
    assert cell.delta != 0 and cell.p_value is None and cell.p_adjusted is None
    assert (
        "scifact: one has a single value to pair with the baseline's, for which the t-test is "
        "undefined (no p-value, no †)"
    ) in result.footnotes


def test_runs_on_other_data_are_not_said_to_differ_from_published_figures_none_of_which_is_shown(tmp_path):
    """A run reading scifact as its train split, compared without --published: no row is marked
    as other data than published figures, and no note speaks of published figures."""
    made = result(tmp_path, "train", ["scifact", "fiqa"], ids={**BEIR_IDS, "scifact": "beir/scifact/train"})
    compared = Comparison(load_results([made]))
    assert compared.other_data == set()
    assert not [note for note in compared.footnotes if "published" in note]
    # (with a published column the same run is marked, as test_comparison checks)
    assert Comparison(load_results([made]), published=["pyserini-bm25-flat"]).other_data == {"scifact"}


def test_a_baseline_named_by_its_folder_is_that_run(tmp_path):
    """A run labelled otherwise than its folder (its folder's name is a published column's label):
    --baseline given that folder's name picks that run, not the others."""
    published = "pyserini-bm25-flat (published)"
    base = make_result(tmp_path, "base", 0.0, noise=0.0)
    mimic = make_result(tmp_path / "shared", published, 0.05, seed=4)
    chosen = Comparison(load_results([base, mimic]), published=["pyserini-bm25-flat"], baseline=published)
    assert chosen.baseline.label == f"shared/{published}" and chosen.baseline.folder == published
    scifact = next(r for r in chosen.rows if r.name == "scifact")
    assert scifact.cells[f"shared/{published}"].delta is None and scifact.cells["base"].delta is not None


def test_significance_is_p_below_alpha_not_at_it():
    """† means p < 0.05 (docs/comparing.md), so a p-value of exactly α is not significant."""
    from rerank_eval.reporting.compare.comparison import Cell
    from rerank_eval.reporting.compare.stats import ALPHA

    assert ALPHA == 0.05
    assert not Cell(0.5, delta=0.1, p_adjusted=ALPHA).significant
    assert Cell(0.5, delta=0.1, p_adjusted=float(np.nextafter(ALPHA, 0))).significant
    assert not Cell(0.5, delta=0.1, p_adjusted=None).significant  # no test: never marked
