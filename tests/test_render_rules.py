"""How each text rendering lays out a neutral table: the page's structure and alignment, a table
without averages, and where bold may fall.

Tables are built here by hand, so each expectation is read off the table given, not off another
rendering.
"""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser

import pandas as pd
import pytest

from rerank_eval.reporting.compare.comparison import Comparison
from rerank_eval.reporting.compare.table import comparison_table, p_text
from rerank_eval.reporting.render.data import comparison_csv, comparison_json, spreadsheet_safe
from rerank_eval.reporting.render.html import html
from rerank_eval.reporting.render.latex import latex
from rerank_eval.reporting.render.markdown import markdown, markdown_escape
from rerank_eval.reporting.report import report_table
from rerank_eval.reporting.table import Column, Entry, ResultTable
from rerank_eval.results.folder import load_result
from tests.test_comparison import make_result
from tests.test_report_rules import forums_report

LEAVES = ("td", "th", "p", "title", "h1", "style")


class Elements(HTMLParser):
    """Every start tag under <table> with its class, each leaf's text, and any text outside a leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, str | None]] = []
        self.texts: list[tuple[str, str]] = []
        self.stray: list[str] = []
        self._open: list[str] = []
        self._in_table = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._in_table = True
        elif self._in_table:
            self.tags.append((tag, dict(attrs).get("class")))
        self._open.append(tag)

    def handle_endtag(self, tag):
        while self._open and self._open.pop() != tag:
            pass
        if tag == "table":
            self._in_table = False

    def handle_data(self, data):
        leaf = next((tag for tag in reversed(self._open) if tag in LEAVES), None)
        if leaf:
            self.texts.append((leaf, data))
        elif data.strip():
            self.stray.append(data)


def elements(text: str) -> Elements:
    parsed = Elements()
    parsed.feed(text)
    parsed.close()
    return parsed


def small_table(averages_from: int | None) -> ResultTable:
    return ResultTable(
        "A title",
        [Column("Dataset", numeric=False), Column("m1"), Column("m2")],
        [
            [Entry("scifact"), Entry("0.7000", bold=True), Entry("0.6000", " (-0.1000)")],
            [Entry("fiqa"), Entry("0.3000"), Entry("0.4000", " (+0.1000)", bold=True)],
        ],
        ["First line.", "Second line."],
        averages_from,
    )


ROW = [("tr", None), ("td", None), ("td", "number"), ("td", "number")]


def test_html_right_aligns_the_number_columns_and_only_them_and_puts_no_text_between_cells():
    """The naming column's header and cells carry no class; every other column's carry `number`
    (right-aligned by the page's style). Nothing but the cells', caption's and title's texts is
    shown: no text sits between the tags."""
    page = html(small_table(None))
    parsed = elements(page)
    assert parsed.tags == [
        ("caption", None), ("p", None), ("p", None),
        ("thead", None), ("tr", None), ("th", None), ("th", "number"), ("th", "number"),
        ("tbody", None), *ROW[:2], ("td", "number"), ("strong", None), ("td", "number"),
        *ROW, ("strong", None),
    ]  # fmt: skip
    assert parsed.stray == []
    cells = [text for tag, text in parsed.texts if tag == "td"]
    assert "".join(cells) == "scifact0.70000.6000 (-0.1000)fiqa0.30000.4000 (+0.1000)"
    assert [text for tag, text in parsed.texts if tag == "p"] == ["First line.", "Second line."]
    assert page.count("<tr>") == 3 and page.count("</tr>") == 3


def test_html_of_a_table_without_averages_has_one_body_and_of_one_with_them_two():
    """averages_from None (one dataset, no average): every row in one plain <tbody>, no empty
    averages body; averages_from 1: the rows from it on in a <tbody class="averages">."""
    bodies = [tag for tag in elements(html(small_table(None))).tags if tag[0] == "tbody"]
    assert bodies == [("tbody", None)]
    parsed = elements(html(small_table(1)))
    assert [tag for tag in parsed.tags if tag[0] in ("tbody", "tr")] == [
        ("tr", None), ("tbody", None), ("tr", None), ("tbody", "averages"), ("tr", None),
    ]  # fmt: skip
    assert parsed.stray == []


# -- the comparison's CSV --


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Comparison:
    root = tmp_path_factory.mktemp("render")
    made = [make_result(root, "base", 0.0, noise=0.0), make_result(root, "better", 0.08, seed=1)]
    return Comparison([load_result(folder) for folder in made])


def test_the_wide_csv_lists_rows_in_the_tables_order_not_alphabetically(pair):
    """The suite's rows in its order (fiqa, the cqadupstack group, scifact), then the averages, as
    every table shows them; sorted, the averages came first ("Average, all 3 rows" < "BEIR-13")."""
    wide = list(csv.reader(comparison_csv(pair, wide=True).splitlines()))
    assert wide[0] == ["dataset", "base", "better"]
    assert [line[0] for line in wide[1:]] == [
        "fiqa",
        "cqadupstack",
        "scifact",
        "BEIR-13",
        "Average, all 3 rows",
    ]
    shown = [line.split(" | ")[0].lstrip("| ") for line in markdown(comparison_table(pair)).splitlines()[4:9]]
    assert shown == [line[0] for line in wide[1:]]


def test_the_comparison_json_names_each_field_as_its_format_says_and_is_indented(pair):
    """Format 2's fields by name, each row's kind and members, the notes the caption prints; two
    spaces of indentation, one field a line, so that the file reads and diffs line by line."""
    text = comparison_json(pair)
    payload = json.loads(text)
    assert list(payload) == [
        "format", "metric", "test", "alpha", "correction", "seed", "resamples", "interval", "baseline",
        "runs", "published", "rows", "notes", "warnings",
    ]  # fmt: skip
    assert (payload["format"], payload["metric"], payload["baseline"]) == (2, "nDCG@10", "base")
    assert "Holm-Bonferroni" in payload["correction"] and "bootstrap 95%" in payload["interval"]
    assert (payload["published"], payload["warnings"]) == ([], [])
    forums = ["cqadupstack-android", "cqadupstack-english"]
    assert [(row["dataset"], row["kind"], row["members"]) for row in payload["rows"]] == [
        ("fiqa", "dataset", ["fiqa"]),
        ("cqadupstack", "group", forums),
        ("scifact", "dataset", ["scifact"]),
        ("BEIR-13", "average", ["fiqa", "scifact"]),
        ("Average, all 3 rows", "average", ["fiqa", "cqadupstack", "scifact"]),
    ]
    assert set(payload["rows"][0]["cells"]) == {"base", "better"}
    assert [f"Note: {note}." for note in payload["notes"]] == [
        line for line in comparison_table(pair).caption if line.startswith("Note: ")
    ]
    assert len(payload["notes"]) == 1 and "cqadupstack: mean over 2 of its" in payload["notes"][0]
    assert text.startswith('{\n  "format": 2,\n  "metric": "nDCG@10",\n') and text.endswith("\n}\n")


# -- LaTeX --


def test_latex_sets_the_whole_float_with_marks_minus_signs_and_symbols_as_latex_forms():
    """Written out by hand: the column spec, the bold best value (its note never bold), a note's
    minus signs as math minus and its † as a superscript dagger, the rule above the averages, Δ in a
    header, and the caption's title, ±, em dash and < in their LaTeX forms, lines joined by \\\\."""
    table = ResultTable(
        "T_1",
        [Column("Dataset", numeric=False), Column("m1"), Column("Δ")],
        [
            [
                Entry("a&b"),
                Entry("0.7000", " (-0.0100†, p=0.010) [-0.0200, +0.0300]", bold=True),
                Entry("+0.0100"),
            ],
            [Entry("Avg"), Entry("0.5000"), Entry("–")],
        ],
        ["OK within ±0.0005 — else", "p < 0.05"],
        averages_from=1,
    )
    assert latex(table).splitlines() == [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{lrr}",
        r"\toprule",
        r"Dataset & m1 & $\Delta$ \\",
        r"\midrule",
        r"a\&b & \textbf{0.7000} ($-$0.0100$^\dagger$, p=0.010) {[}$-$0.0200, +0.0300{]} & +0.0100 \\",
        r"\midrule",
        r"Avg & 0.5000 & -- \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{T\_1. \\ OK within $\pm$0.0005 --- else \\ p $<$ 0.05}",
        r"\end{table}",
    ]


# -- a result's own table --


def test_a_results_headers_wrap_measure_over_stage_in_the_terminal_and_keep_delta_beside_its_values():
    """Each measure's header names its stage on a second terminal line (one line elsewhere), and the
    reranked value and Δ follow the first stage's column, so parts of a narrow terminal's table
    never split a value from its Δ."""
    columns = report_table(forums_report()).columns
    assert [(c.name, c.terminal, c.follows) for c in columns[1:6]] == [
        ("nDCG@10 first stage", "nDCG@10\nfirst stage", False),
        ("nDCG@10 reranked", "nDCG@10\nreranked", True),
        ("Δ", None, True),
        ("Judged@10 reranked", "Judged@10\nreranked", False),
        ("R@100 first stage", "R@100\nfirst stage", False),
    ]
    assert not columns[0].numeric and all(c.numeric for c in columns[1:])


# -- Markdown --


def test_markdown_escapes_what_would_format_link_or_tag_and_leaves_plain_comparisons_as_written():
    """A backslash, code span, emphasis, link, entity and tag are each shown literally (a backslash
    before ASCII punctuation, `&amp;` and `&lt;` as CommonMark reads them); `p < 0.05` and `a & b`
    are not a tag or an entity, so they stay as written."""
    assert markdown_escape(r"a\b `c` *d* _e_ [f](g) &amp; &#36; <b> </i> <!x") == (
        r"a\\b \`c\` \*d\* \_e\_ \[f\](g) &amp;amp; &amp;#36; &lt;b> &lt;/i> &lt;!x"
    )
    assert markdown_escape("p < 0.05, a & b") == "p < 0.05, a & b"


def test_markdown_bolds_the_value_not_its_note_and_escapes_names_in_title_header_and_caption():
    table = ResultTable(
        "m_1 on beir",
        [Column("Dataset", numeric=False), Column("a*b"), Column("c")],
        [[Entry("x_y"), Entry("0.7000", " (+0.0100†, p=0.010)", bold=True), Entry("0.6000")]],
        ["First stage: BM25 [flat]; top-100.", "Line two."],
    )
    assert markdown(table) == (
        "**m\\_1 on beir**\n\n"
        "| Dataset | a\\*b | c |\n"
        "|---|---:|---:|\n"
        "| x\\_y | **0.7000** (+0.0100†, p=0.010) | 0.6000 |\n\n"
        "First stage: BM25 \\[flat\\]; top-100.  \nLine two.\n"
    )


# -- CSV for spreadsheets --


def test_every_formula_start_owasp_lists_is_made_inert_in_cells_row_labels_and_column_names():
    """`+`, a tab and a carriage return start a formula too (OWASP's list, beside `=`, `-` and `@`);
    a text cell starting with one is led by an apostrophe, numbers stay numbers."""
    frame = pd.DataFrame(
        {"run": ["+cmd", "\tx", "\ry", "=1", "-a", "@b", "ok"], "+value": [-0.5, 1, 2, 3, 4, 5, 6]},
        index=["+i", "j", "k", "l", "m", "n", "o"],
    )
    safe = spreadsheet_safe(frame)
    assert list(safe["run"]) == ["'+cmd", "'\tx", "'\ry", "'=1", "'-a", "'@b", "ok"]
    assert list(safe.columns) == ["run", "'+value"] and list(safe.index)[:2] == ["'+i", "j"]
    assert list(safe["'+value"]) == [-0.5, 1, 2, 3, 4, 5, 6]


# -- p-values --


def test_a_p_value_at_a_digit_boundary_is_shown_by_the_rule_for_at_or_above_it():
    """p < 0.001 is said as such, so 0.001 itself is p=0.001; two digits from 0.1 on, so 0.1 itself is
    p=0.10."""
    assert [p_text(p) for p in (0.001, 0.000999, 0.1)] == ["p=0.001", "p<0.001", "p=0.10"]


def test_a_run_lacking_a_row_shows_a_dash_there_with_no_note_mark_or_bold(tmp_path):
    made = [
        make_result(tmp_path, "base", 0.0, noise=0.0),
        make_result(tmp_path, "part", 0.3, datasets=["scifact"]),
    ]
    table = comparison_table(Comparison([load_result(folder) for folder in made]))
    names = [column.name for column in table.columns]
    assert names == ["Dataset", "base (baseline)", "part", "W/T/L"]
    fiqa = next(row for row in table.rows if row[0].value == "fiqa")
    assert [(entry.text, entry.bold) for entry in fiqa[2:]] == [("–", False), ("", False)]
    # the rows it lacks are tested against no run: its family is still the one compared run
    assert "Holm–Bonferroni-adjusted across the 1 compared run); † = p < 0.05;" in table.caption[0]
    assert table.caption[0].endswith("; W/T/L = queries won/tied/lost vs the baseline.")
    assert "cqadupstack: queries of all members pooled for the test and W/T/L." in table.caption


# -- bold: the best value of a row, and nothing else --


def test_a_row_where_no_model_has_a_value_has_no_bold_dash():
    """Two models, neither with a reranked value on fiqa: `None == None` once made each of that row's
    dashes (and the average's) bold, as if a missing value were the best."""
    import copy

    from rerank_eval.reporting.report import models_table
    from tests.test_report_rules import FORUMS, manifest, record, report

    values = {key: v for key, v in FORUMS.items() if key[0] in ("scifact", "fiqa")}
    del values[("fiqa", "reranked", "nDCG@10")]
    data = manifest([record("scifact"), record("fiqa")], average_rows=["scifact", "fiqa"])
    other = copy.deepcopy(data)
    other["model"]["name"] = "m2"
    table = models_table([report(data, values), report(other, values)])
    bold = {row[0].text: [entry.text for entry in row if entry.bold] for row in table.rows}
    assert bold["fiqa"] == [] and bold["BEIR-13"] == []
    assert len(bold["scifact"]) == 2  # the two models tie there: both are the best
    assert "**–**" not in markdown(table)


def test_an_average_over_only_some_rows_is_not_bold_even_where_it_ties_the_best():
    """The caption says such a value is "not marked best": it covers other rows than the others'."""
    from types import SimpleNamespace

    from rerank_eval.reporting.compare.comparison import Cell, Row
    from rerank_eval.reporting.compare.table import _entries

    runs = [SimpleNamespace(label=label) for label in ("base", "a", "short")]
    comparison = SimpleNamespace(runs=runs, baseline=runs[0], published=[])
    cells = {"base": Cell(0.5), "a": Cell(0.6, delta=0.1, p_adjusted=0.2)}
    for short_value, bold in ((0.6, [True, False]), (0.7, [True, False]), (0.55, [True, False])):
        cells["short"] = Cell(short_value, delta=short_value - 0.5, p_adjusted=0.2)
        row = Row("BEIR-13", "average", dict(cells), ["x", "y"], short={"short"})
        entries = _entries(comparison, row)
        assert [entries[i].bold for i in (2, 4)] == bold, short_value  # a's value, then short's
        assert not entries[1].bold  # the baseline's 0.5 is no best


def test_latex_sets_a_negative_number_cell_with_a_minus_sign_and_text_as_written():
    """A result's own Δ column holds the number itself: -0.0123 is set $-$0.0123 like a note's Δ,
    while a name that merely starts with a hyphen and a digit stays text."""
    columns = [Column("Dataset", numeric=False), Column("Δ")]
    rows = [[Entry("scifact"), Entry("-0.0123")], [Entry("-5k"), Entry("0.0100")], [Entry("x"), Entry("-3")]]
    lines = latex(ResultTable("t", columns, rows, [], None)).splitlines()
    assert r"scifact & $-$0.0123 \\" in lines and r"-5k & 0.0100 \\" in lines and r"x & $-$3 \\" in lines
