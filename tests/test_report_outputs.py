"""What `compare` and `export` show: p-values beside Δ, tables that fit 80 columns without cutting
a name, the figure for a paper, and export CSVs that carry their model and suite.

Expected values and significance are computed here from the saved per-query values (scipy's
paired t-test, Holm written out), not read back from the comparison; only the bootstrap intervals
the error bars draw are the comparison's (test_comparison checks them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

from rerank_eval.cli import app, results_commands
from rerank_eval.reporting.compare.chart import comparison_chart
from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.table import comparison_table, p_text
from rerank_eval.reporting.render.latex import latex
from rerank_eval.reporting.render.markdown import markdown
from rerank_eval.reporting.render.plot import figure, figure_file
from rerank_eval.results.folder import load_result
from tests.expected import holm_by_hand
from tests.test_comparison import QUERIES, make_result

# preset names as users type them; the baseline first
NAMES = ["bm25", "jina-reranker-v3", "mxbai-rerank-large-v2", "qwen3-reranker-0.6b"]
SHIFTS = [0.0, 0.08, 0.0, -0.03]
FORUMS = ["cqadupstack-android", "cqadupstack-english"]
ROWS = {"scifact": ["scifact"], "fiqa": ["fiqa"], "cqadupstack": FORUMS}
AVERAGES = {"BEIR-13": ["scifact", "fiqa"], "Average, all 3 rows": ["scifact", "fiqa", "cqadupstack"]}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    return {
        name: make_result(root, name, shift, noise=0.0 if index == 0 else 0.05, seed=index)
        for index, (name, shift) in enumerate(zip(NAMES, SHIFTS))
    }


def per_query(folder: Path, dataset: str) -> np.ndarray:
    frame = load_result(folder).per_query
    selected = frame[(frame.dataset == dataset) & (frame.stage == "reranked")]
    return selected.set_index("query_id").loc[QUERIES[dataset], "value"].to_numpy()


def row_value(folder: Path, row: str) -> float:
    """A row's value: a dataset's mean, a group's mean of its members' means, an average's mean."""
    if row in AVERAGES:
        return float(np.mean([row_value(folder, r) for r in AVERAGES[row]]))
    return float(np.mean([per_query(folder, d).mean() for d in ROWS[row]]))


def adjusted_p_values(folders: dict[str, Path], row: str) -> dict[str, float]:
    """Each compared run's Holm-adjusted t-test p-value on a row: over its (pooled) queries, or over
    per-row values for an average."""

    def sample(name: str) -> np.ndarray:
        if row in AVERAGES:
            return np.array([row_value(folders[name], r) for r in AVERAGES[row]])
        return np.concatenate([per_query(folders[name], d) for d in ROWS[row]])

    raw = [stats.ttest_rel(sample(name), sample(NAMES[0])).pvalue for name in NAMES[1:]]
    return dict(zip(NAMES[1:], holm_by_hand(raw)))


def compared(folders: dict[str, Path], names: list[str] = NAMES, **kwargs) -> Comparison:
    return Comparison([load_result(folders[n]) for n in names], **kwargs)


# -- p-values beside Δ --


def test_p_values_are_short_and_never_rounded_across_alpha():
    assert [p_text(p) for p in (0.201, 1.0, 0.0432, 0.0012, 0.0004)] == [
        "p=0.20", "p=1.00", "p=0.043", "p=0.001", "p<0.001",
    ]  # fmt: skip
    assert p_text(0.0499) == "p=0.0499" and p_text(0.04996) == "p=0.04996"  # not p=0.050 beside a †
    assert p_text(0.0501) == "p=0.050" and p_text(0.05) == "p=0.050"


def test_tables_show_the_holm_adjusted_p_value_the_marks_read(folders):
    result = compared(folders)
    text = markdown(comparison_table(result))
    assert "Δ vs bm25 and its p-value (paired two-sided t-test" in text
    assert "Holm–Bonferroni-adjusted across the 3 compared runs); † = p < 0.05;" in text
    marks = set()
    for row in [*ROWS, *AVERAGES]:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row} |"))
        for name, p in adjusted_p_values(folders, row).items():
            delta = row_value(folders[name], row) - row_value(folders[NAMES[0]], row)
            mark = "†" if p < 0.05 else ""
            marks.add(mark)
            assert f"({delta:+.4f}{mark}, {p_text(p)})" in line, (row, name)
    assert marks == {"", "†"}  # both kinds of cell are checked
    assert re.search(r"\(\+\d\.\d{4}\$\^\\dagger\$, p=0\.\d+\)|p\$<\$0\.001", latex(comparison_table(result)))


# -- 80 columns --


def narrow_output(monkeypatch, *args) -> list[str]:
    monkeypatch.setattr(results_commands, "console", Console(width=80))
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in result.output
    return lines


def test_compare_on_an_80_column_terminal_shows_every_label_and_figure_whole(folders, monkeypatch):
    lines = narrow_output(monkeypatch, "compare", *folders.values(), "--published", "jina-reranker-v3")
    for name in NAMES:
        assert any(re.search(rf"(^|\s){re.escape(name)}(\s|$)", line) for line in lines), name
    assert any("jina-reranker-v3 (published)" in line for line in lines)
    words = {word for line in lines for word in line.split()}
    for row in [*ROWS, *AVERAGES]:
        assert any(line.startswith(row + " ") for line in lines), row
        for name in NAMES:
            assert f"{row_value(folders[name], row):.4f}" in " ".join(lines)
    assert {f"{p_text(p)})" for p in adjusted_p_values(folders, "fiqa").values()} <= words


def test_export_on_an_80_column_terminal_shows_names_and_figures_whole(folders, monkeypatch):
    lines = narrow_output(monkeypatch, "export", folders["mxbai-rerank-large-v2"])
    assert any("mxbai-rerank-large-v2 on beir (top-100)" in line for line in lines)
    text = " ".join(lines)
    for row in [*ROWS, *AVERAGES]:
        assert any(line.startswith(row + " ") for line in lines), row
        assert f"{row_value(folders['mxbai-rerank-large-v2'], row):.4f}" in text
    for header in ("nDCG@10", "Judged@10", "R@100", "Queries", "Seconds"):
        assert header in text


def test_export_of_a_folder_of_several_models_prints_their_one_table(folders, tmp_path, monkeypatch):
    """What `--model A --model B` wrote (a folder per model) exports as the run printed it: one
    column per model; the CSV holds every model's summary lines under one header."""
    parent = next(iter(folders.values())).parent  # the models' folders side by side
    csv = tmp_path / "all.csv"
    lines = narrow_output(monkeypatch, "export", parent, "--csv", csv, "--html", tmp_path / "all.html")
    assert any(f"nDCG@10 on beir (top-100), {len(NAMES)} models" in line for line in lines)
    exported = pd.read_csv(csv)
    assert list(exported.model.unique()) == NAMES  # the folders' order, one header
    for name in NAMES:
        own = pd.read_csv(folders[name] / "summary.csv")
        mine = exported[exported.model == name].drop(columns=["model", "suite"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, own)


def test_paths_are_printed_as_written_never_read_as_markup(folders, tmp_path):
    """A path is echoed as the file it names: `[bold]x.csv` was printed as `x.csv`, and
    `[link=...]` made a terminal hyperlink."""
    named = tmp_path / "[bold]x.csv"
    result = CliRunner().invoke(app, ["export", str(folders["bm25"]), "--csv", str(named)])
    assert result.exit_code == 0 and named.is_file()
    assert f"wrote {named}" in result.output.replace("\n", "")
    missing = tmp_path / "[red]gone"
    result = CliRunner().invoke(app, ["export", str(missing)])
    assert result.output == f"error: {missing} does not exist\n"


def test_progress_lines_show_descriptions_as_written(capsys):
    from rerank_eval.runtime.progress import step

    with step("reading [bold]corpus"):
        pass
    assert "reading [bold]corpus: done in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (dict(sha="other"), "first stage of scifact differs between bm25 and ce"),
        (dict(top_k=50), "top-k differs (bm25: 100, ce: 50)"),
        (dict(datasets=["scifact"]), "datasets differ (bm25: scifact, fiqa, cqadupstack-android, "
         "cqadupstack-english; ce: scifact)"),
    ],
    ids=["candidates", "top-k", "datasets"],
)  # fmt: skip
def test_export_refuses_a_folder_of_results_that_are_not_one_table(tmp_path, second, reason):
    """The several-models table shows one first stage column and each model's Δ from it: results
    put side by side by hand that reranked other candidates, to another depth or on other datasets
    once showed the first one's first stage beside them and Δs from it, without a word. `compare`
    (with --force) is where such results meet; the same result twice is refused as there."""
    folder = tmp_path / "two"
    make_result(folder, "bm25", 0.0, noise=0.0)
    make_result(folder, "ce", 0.05, seed=1, **second)
    result = CliRunner().invoke(app, ["export", str(folder)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: the results in {folder} are not one table: {reason}; set them side by side with "
        f"`rerank-eval compare {folder}`"
    ]
    assert CliRunner().invoke(app, ["compare", str(folder), "--force"]).exit_code == 0
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "a").symlink_to(folder / "bm25")
    (twice / "b").symlink_to(folder / "bm25")
    refused = CliRunner().invoke(app, ["export", str(twice)])
    assert refused.exit_code == 2 and "is given twice; give each result once" in refused.output


def test_models_table_on_an_80_column_terminal_names_every_model_whole(folders):
    from rerank_eval.reporting.render.terminal import terminal_table
    from rerank_eval.reporting.report import Report, models_table

    reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders.values())]
    console = Console(width=80, record=True)
    console.print(terminal_table(models_table(reports)))
    text = console.export_text()
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in text
    for name in NAMES:
        assert any(re.search(rf"(^|\s){re.escape(name)}(\s|$)", line) for line in lines), name
        for row in [*ROWS, *AVERAGES]:
            assert f"{row_value(folders[name], row):.4f}" in text, (name, row)


def test_models_table_says_nothing_of_columns_it_does_not_have(folders, monkeypatch):
    """The Seconds note belongs to the one-model table's column; the several-models table has none
    (it once kept the note). Both tables check the first stage against its published figures."""
    import dataclasses

    from rerank_eval.reporting.report import Report, models_table
    from rerank_eval.results.manifest import Timings

    monkeypatch.setattr(Report, "checked_measures", property(lambda self: ["nDCG@10"]))
    reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders.values())]
    manifest = reports[0].manifest  # as if its scores came from the journal: its Seconds are not timed
    reused = [dataclasses.replace(d, timings=Timings(0.0, resumed_queries=3)) for d in manifest.datasets]
    reports[0].manifest = dataclasses.replace(manifest, datasets=reused)
    assert any("Seconds" in line for line in reports[0].caption())
    assert not any("Seconds" in line for line in models_table(reports).caption)
    table = models_table(reports)
    assert any("vs published" in line for line in table.caption)
    assert table.columns[-1].name == "First stage nDCG@10 vs published"


def test_models_table_puts_each_models_value_in_its_column_and_bolds_the_best(folders):
    """The neutral table itself: per row, the first stage's mean, each model's reranked mean in
    that model's column (computed here from per_query.csv), the best one bold, the queries."""
    from rerank_eval.reporting.report import Report, models_table

    reports = [Report(saved.manifest, saved.per_query) for saved in map(load_result, folders.values())]
    table = models_table(reports)
    judged = [f"Judged@10 {name}" for name in NAMES]
    assert [c.name for c in table.columns] == [
        "Dataset", "nDCG@10 first stage", "R@100 first stage",
        *(column for pair in zip(NAMES, judged) for column in pair), "Queries",
    ]  # fmt: skip
    cells = {row[0].value: row[1:] for row in table.rows}
    assert list(cells) == [*ROWS, *AVERAGES]
    first_stage = load_result(folders[NAMES[0]]).per_query.query("stage == 'first_stage'")
    for row, (first, _recall, *model_cells, queries) in cells.items():
        models = model_cells[::2]
        datasets = [d for r in AVERAGES.get(row, [row]) for d in ROWS[r]]
        if row in AVERAGES:
            expected_first = np.mean([first_stage_mean(first_stage, ROWS[r]) for r in AVERAGES[row]])
        else:
            expected_first = first_stage_mean(first_stage, ROWS[row])
        assert first.value == f"{expected_first:.4f}", row
        values = [row_value(folders[name], row) for name in NAMES]
        assert [m.value for m in models] == [f"{v:.4f}" for v in values], row
        assert [m.note for m in models] == [f" ({v - expected_first:+.4f})" for v in values], row
        assert [m.bold for m in models] == [v == max(values) for v in values], row
        assert queries.value == str(sum(len(QUERIES[d]) for d in datasets)), row


def first_stage_mean(frame: pd.DataFrame, datasets: list[str]) -> float:
    """A row's first-stage mean: its datasets' means, averaged (CQADupStack's forums)."""
    return float(np.mean([frame[frame.dataset == d]["value"].mean() for d in datasets]))


# -- the figure --


def bars_by_label(drawn) -> dict[str, list]:
    from matplotlib.container import BarContainer

    axes = drawn.axes[0]
    return {c.get_label(): list(c.patches) for c in axes.containers if isinstance(c, BarContainer)}


def texts_at(drawn, x: float) -> list[str]:
    return [t.get_text() for t in drawn.axes[0].texts if abs(t.xy[0] - x) < 1e-9]


def test_figure_labels_each_bar_with_its_value_and_marks_the_significant_ones(folders):
    result = compared(folders)
    drawn = figure(comparison_chart(result))
    caption = " ".join(t.get_text() for t in drawn.texts).replace("\n", " ")
    assert "nDCG@10" in caption and "first stage: BM25" in caption and "top-100" in caption
    assert "Holm–Bonferroni-adjusted" in caption and "bootstrap 95% interval" in caption
    bars = bars_by_label(drawn)
    assert list(bars) == ["bm25 (baseline)", *NAMES[1:]]
    rows = [row.name for row in result.rows]  # in the suite's order (fiqa before scifact)
    assert sorted(rows) == sorted([*ROWS, *AVERAGES])
    marked, unmarked = set(), set()
    for name in NAMES:
        patches = bars[f"{name} (baseline)" if name == NAMES[0] else name]
        assert len(patches) == len(rows)
        for patch, row in zip(patches, rows):
            texts = texts_at(drawn, patch.get_x() + patch.get_width() / 2)
            values = [t for t in texts if re.fullmatch(r"\d\.\d{3}", t)]
            assert values == [f"{row_value(folders[name], row):.3f}"], (name, row)
            assert patch.get_height() == pytest.approx(row_value(folders[name], row))
            marks = [t for t in texts if t in ("▲", "▼")]
            p = 1.0 if name == NAMES[0] else adjusted_p_values(folders, row)[name]
            up = row_value(folders[name], row) > row_value(folders[NAMES[0]], row)
            assert marks == ([("▲" if up else "▼")] if p < 0.05 else []), (name, row)
            (marked if marks else unmarked).add((name, row))
    assert marked and unmarked


def test_figure_error_bars_are_the_intervals_of_the_averages(folders):
    from matplotlib.container import ErrorbarContainer

    result = compared(folders)
    drawn = figure(comparison_chart(result))
    averages = [row for row in result.rows if row.kind == "average"]
    errorbars = [c for c in drawn.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == len(NAMES) - 1  # the baseline has none
    for name, container in zip(NAMES[1:], errorbars):
        segments = container.lines[2][0].get_segments()
        drawn_ends = [(s[0][1], s[1][1]) for s in segments if len(s) and np.isfinite(s).all()]
        expected = []
        for row in averages:
            cell = row.cells[name]
            low, high = cell.interval
            expected.append((cell.value - cell.delta + low, cell.value - cell.delta + high))
        np.testing.assert_allclose(drawn_ends, expected, rtol=1e-12, err_msg=name)


def test_figure_legend_sits_above_the_axes_and_every_label(folders):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    drawn = figure(comparison_chart(compared(folders)))
    renderer = FigureCanvasAgg(drawn).get_renderer()
    drawn.draw(renderer)
    legend = drawn.legends[0].get_window_extent(renderer)
    assert legend.y0 >= drawn.axes[0].get_window_extent(renderer).y1
    assert all(t.get_window_extent(renderer).y1 <= legend.y0 for t in drawn.axes[0].texts)
    assert legend.x0 >= 0 and legend.x1 <= drawn.bbox.width


def test_a_bar_a_run_lacks_is_said_missing_not_left_to_read_as_zero():
    """A published figure not given for a row (or a run without a dataset): no bar, and "n/a" at
    its base; a score of 0 is a bar labelled 0.000."""
    from rerank_eval.reporting.chart import Bar, BarChart, Series

    chart = BarChart(
        groups=["scifact", "vaswani"],
        series=[
            Series("bm25 (baseline)", [Bar(0.5), Bar(0.0)], True),
            Series("published", [Bar(0.6), Bar(None)]),
        ],
        axis="nDCG@10",
        caption="nDCG@10",
    )
    drawn = figure(chart)
    bars = bars_by_label(drawn)
    baseline, published = bars["bm25 (baseline)"], bars["published"]
    assert [patch.get_height() for patch in baseline] == [0.5, 0.0]
    centre = [[patch.get_x() + patch.get_width() / 2 for patch in bars] for bars in (baseline, published)]
    assert texts_at(drawn, centre[0][1]) == ["0.000"]
    assert texts_at(drawn, centre[1][0]) == ["0.600"]
    assert texts_at(drawn, centre[1][1]) == ["n/a"]
    # every slot inside the axes, a missing bar's too (fitted to the bars drawn, matplotlib's
    # limits cut off an "n/a" in the last row, and that row's name stood off its bars)
    left, right = drawn.axes[0].get_xlim()
    assert left <= min(centre[0]) - 0.2 and max(centre[1]) + 0.2 <= right
    assert all(left <= text.xy[0] <= right for text in drawn.axes[0].texts)


def test_long_names_are_wrapped_whole_and_leave_the_axes_their_room():
    """A dataset key may take 128 characters and a run's label a folder path: on one line, a
    row's name squeezed the axes to nothing (matplotlib gave up its layout)."""
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from rerank_eval.reporting.chart import Bar, BarChart, Series

    row, run = "a-" * 63 + "xy", "/home/user/checkpoints/run-2026-11-30/step-12000/merged"
    chart = BarChart(
        groups=["scifact", row],
        series=[Series("bm25 (baseline)", [Bar(0.5), Bar(0.4)], True), Series(run, [Bar(0.6), Bar(0.45)])],
        axis="nDCG@10",
        caption="nDCG@10",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied because axes sizes collapsed"
        drawn = figure(chart)
        drawn.draw(FigureCanvasAgg(drawn).get_renderer())
    assert drawn.axes[0].get_position().height > 0.2  # of the figure's height
    ticks = [label.get_text() for label in drawn.axes[0].get_xticklabels()]
    assert [tick.replace("\n", "") for tick in ticks] == ["scifact", row]
    assert max(len(line) for line in ticks[1].split("\n")) <= 20
    legend = [text.get_text() for text in drawn.legends[0].get_texts()]
    assert [label.replace("\n", "") for label in legend] == ["bm25 (baseline)", run]
    assert max(len(line) for label in legend for line in label.split("\n")) <= 40


@pytest.mark.parametrize(
    ("names", "inches"),
    [(NAMES, (7.0, 3.2)), (NAMES[:2], (3.4, 2.8))],  # 20 bars: the page's width; 10: one column
    ids=["page", "column"],
)
def test_figure_files_have_the_paper_size_in_each_format(folders, tmp_path, names, inches):
    import matplotlib.image

    chart = comparison_chart(compared(folders, names))
    paths = {suffix: tmp_path / f"figure.{suffix}" for suffix in ("png", "pdf", "svg")}
    for suffix, path in paths.items():
        path.write_bytes(figure_file(chart, suffix))
    assert matplotlib.image.imread(str(paths["png"])).shape[:2] == (
        round(inches[1] * 300),
        round(inches[0] * 300),
    )
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Type3" not in pdf  # TrueType fonts, which publishers accept
    svg = paths["svg"].read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and f'width="{inches[0] * 72:g}pt"' in svg


# -- export CSV --


def test_export_csvs_carry_model_and_suite_and_concatenate(folders, tmp_path):
    frames = []
    for name in ("bm25", "jina-reranker-v3"):
        path = tmp_path / f"{name}.csv"
        result = CliRunner().invoke(app, ["export", str(folders[name]), "--csv", str(path)])
        assert result.exit_code == 0, result.output
        frames.append(pd.read_csv(path))
    both = pd.concat(frames, ignore_index=True)
    assert list(both.columns[:3]) == ["model", "suite", "dataset"]
    assert both.groupby("model").size().to_dict() == {
        "bm25": len(frames[0]),
        "jina-reranker-v3": len(frames[1]),
    }
    assert set(both.suite) == {"beir"}
    for name in ("bm25", "jina-reranker-v3"):
        lines = both[(both.model == name) & (both.measure == "nDCG@10")].set_index("dataset")
        for row in [*ROWS, *AVERAGES]:
            assert lines.loc[row, "reranked"] == pytest.approx(row_value(folders[name], row), abs=1e-9)
        # the rest is the result folder's own summary.csv
        own = pd.read_csv(folders[name] / "summary.csv")
        pd.testing.assert_frame_equal(both[both.model == name].iloc[:, 2:].reset_index(drop=True), own)


@pytest.mark.parametrize(
    ("value", "reference", "shown"),
    [
        (0.7320, 0.7325, "OK"),
        (0.7330, 0.7325, "OK"),
        (0.73195, 0.7325, "-0.0006"),
        (0.7331, 0.7325, "+0.0006"),
    ],
)
def test_a_difference_of_exactly_the_tolerance_is_ok_on_both_sides(value, reference, shown):
    from rerank_eval.reporting.report import reference_check

    assert reference_check(value, reference) == shown


def test_markdown_shows_dollars_and_tildes_as_written():
    """GitHub reads `$...$` as mathematics and `~~...~~` as struck through: a model named
    `ckpt-$v1$` or `a~~b~~` showed as something else. Each is escaped, and each escape is one
    CommonMark allows (a backslash before ASCII punctuation)."""
    from rerank_eval.reporting.render.markdown import markdown_escape

    assert markdown_escape("ckpt-$v1$ a~~b~~") == "ckpt-\\$v1\\$ a\\~\\~b\\~\\~"
