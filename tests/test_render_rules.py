"""How each text rendering lays out a neutral table: the page's structure and alignment, a table
without averages, and where bold may fall.

Tables are built here by hand, so each expectation is read off the table given, not off another
rendering.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from rerank_eval.reporting.compare.comparison import Cell, Comparison, Row
from rerank_eval.reporting.compare.table import _entries, comparison_table, p_text
from rerank_eval.reporting.render.data import comparison_csv, comparison_json, spreadsheet_safe
from rerank_eval.reporting.render.html import html
from rerank_eval.reporting.render.latex import latex
from rerank_eval.reporting.render.markdown import markdown, markdown_escape
from rerank_eval.reporting.render.terminal import terminal_table
from rerank_eval.reporting.report import models_table, report_table
from rerank_eval.reporting.table import Column, Entry, ResultTable
from rerank_eval.results.folder import load_result
from tests.test_comparison import make_result
from tests.test_report_rules import FORUMS, forums_report, manifest, record, report

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
    values = {key: v for key, v in FORUMS.items() if key[0] in ("scifact", "fiqa")}
    del values[("fiqa", "reranked", "nDCG@10")]
    data = manifest([record("scifact"), record("fiqa")], average_rows=["scifact", "fiqa"])
    other = second_model(data)
    table = models_table([report(data, values), report(other, values)])
    bold = {row[0].text: [entry.text for entry in row if entry.bold] for row in table.rows}
    assert bold["fiqa"] == [] and bold["BEIR-13"] == []
    assert len(bold["scifact"]) == 2  # the two models tie there: both are the best
    assert "**–**" not in markdown(table)


def test_an_average_over_only_some_rows_is_not_bold_even_where_it_ties_the_best():
    """The caption says such a value is "not marked best": it covers other rows than the others'."""
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


# -- the terminal: bold, widths, keys and parts --


def terminal_lines(table: ResultTable, width: int = 80, colour: bool = True) -> list[str]:
    """The terminal's lines at `width`: with colour, as a terminal shows them (bold as escape codes);
    without, as text, each line's trailing spaces dropped."""
    out = io.StringIO()
    shown = {"force_terminal": True, "color_system": "standard"} if colour else {"color_system": None}
    Console(file=out, width=width, **shown).print(terminal_table(table))
    lines = out.getvalue().splitlines()
    return lines if colour else [line.rstrip() for line in lines]


def second_model(data: dict) -> dict:
    """A manifest like `data`'s, of another model (m2)."""
    other = copy.deepcopy(data)
    other["model"]["name"] = "m2"
    return other


def bold_table() -> ResultTable:
    return ResultTable(
        "",
        [Column("Dataset", numeric=False), Column("m1")],
        [[Entry("scifact"), Entry("0.7000", " (+0.1000)", bold=True)], [Entry("fiqa"), Entry("0.3000")]],
    )


def test_the_terminal_sets_the_best_value_bold_and_nothing_else_of_its_row():
    lines = terminal_lines(bold_table())
    scifact = next(line for line in lines if "scifact" in line)
    fiqa = next(line for line in lines if "fiqa" in line)
    assert "\x1b[1m0.7000" in scifact and "\x1b[" not in scifact.split("\x1b[1m0.7000")[0]
    assert "\x1b[" not in fiqa and "0.3000" in fiqa


def test_the_terminal_never_sets_a_note_bold():
    """table.Entry: the note follows the value and is never bold (as Markdown, LaTeX and HTML do)."""
    scifact = next(line for line in terminal_lines(bold_table()) if "scifact" in line)
    assert "\x1b[1m0.7000\x1b[0m (+0.1000)" in scifact


def widths_table() -> ResultTable:
    """Natural widths (unkeyed): 11, 24, 5, 22, 11 (the terminal header's longest line); floors: the
    naming column's natural 11, the longest cell word 17, the header 5, the label 22, the header
    word nDCG@10 7. Keyed, [2] replaces the long label (natural and floor 6)."""
    return ResultTable(
        "",
        [
            Column("Dataset", numeric=False),
            Column("run one (baseline)", label="run one"),
            Column("W/T/L", follows=True),
            Column("a-very-long-label-word", label="a-very-long-label-word"),
            Column("nDCG@10 first stage", "nDCG@10\nfirst stage"),
        ],
        [
            [
                Entry("a b c d e f"),
                Entry("0.7000", " (+0.1000†,p=0.01)"),
                Entry(""),
                Entry("0.6000"),
                Entry("0.6000"),
            ],
            [Entry("x"), Entry("0.5000"), Entry(""), Entry("0.4000"), Entry("0.1000")],
        ],
    )


def test_terminal_widths_run_from_the_natural_ones_down_to_each_columns_floor_and_no_further():
    """Chrome: framed 3 a column + 1 (5 columns: 16), unframed the gaps between columns. At the
    natural total the natural widths; at the floors' total the floors; one less: nothing fits."""
    from rerank_eval.reporting.render.terminal import ONE_PIECE, PARTS, _headers, _widths

    table = widths_table()
    framed, plain, keyed_tight, folded = ONE_PIECE[0], ONE_PIECE[1], ONE_PIECE[3], PARTS[-1]
    unkeyed, keyed = _headers(table, False), _headers(table, True)
    assert keyed == ["Dataset", "[1]", "W/T/L", "[2]", "nDCG@10\nfirst stage"]
    natural, floor = [11, 24, 5, 22, 11], [11, 17, 5, 22, 7]
    assert _widths(table, unkeyed, framed, 73 + 16) == natural
    assert _widths(table, unkeyed, framed, 62 + 16) == floor
    assert _widths(table, unkeyed, framed, 62 + 15) is None
    assert _widths(table, unkeyed, plain, 73 + 8) == natural
    assert _widths(table, unkeyed, plain, 62 + 8) == floor
    assert _widths(table, unkeyed, plain, 62 + 7) is None
    # one character short of natural: the widest column still above its floor gives it up
    assert _widths(table, unkeyed, plain, 73 + 7) == [11, 23, 5, 22, 11]
    # keyed, one space between columns: [2] is narrow, the label no floor
    assert _widths(table, keyed, keyed_tight, 57 + 4) == [11, 24, 5, 6, 11]
    assert _widths(table, keyed, keyed_tight, 46 + 4) == [11, 17, 5, 6, 7]
    assert _widths(table, keyed, keyed_tight, 46 + 3) is None
    # header words folded too: an empty W/T/L column may shrink to 1, the measure to its cells' 6
    assert _widths(table, keyed, folded, 41 + 4) == [11, 17, 1, 6, 6]
    assert _widths(table, keyed, folded, 41 + 3) is None


def parts_table() -> ResultTable:
    """Floors unframed: Dataset 7, A 10 (its header's "(baseline)"), each W/T/L 5, B and C 9."""
    cell = Entry("0.5000", " (+0.1000)")
    return ResultTable(
        "T",
        [
            Column("Dataset", numeric=False),
            Column("A (baseline)", label="A"),
            Column("W/T/L", follows=True),
            Column("B", label="B"),
            Column("W/T/L", follows=True),
            Column("C", label="C"),
        ],
        [[Entry(name), cell, Entry("1/0/1"), cell, Entry("1/0/1"), cell] for name in ("scifact", "Avg")],
        ["Caption."],
        averages_from=1,
    )


def test_terminal_parts_repeat_the_naming_column_keep_w_t_l_beside_its_run_and_split_title_and_caption():
    """At 43 characters: A with its W/T/L and B with its own would need 7+10+5+9+5 and 4 gaps, 44,
    so B starts a second part, which C joins (7+9+5+9 and 3 gaps, 36). The title heads the first
    part, the caption follows the last, and each keeps the rule before the averages."""
    from rerank_eval.reporting.render.terminal import _parts

    parts = _parts(parts_table(), 43)
    assert [[c.name for c in p.columns] for p in parts] == [
        ["Dataset", "A (baseline)", "W/T/L"],
        ["Dataset", "B", "W/T/L", "C"],
    ]
    assert [[[e.value for e in row] for row in p.rows] for p in parts][1] == [
        ["scifact", "0.5000", "1/0/1", "0.5000"],
        ["Avg", "0.5000", "1/0/1", "0.5000"],
    ]
    assert [(p.title, p.caption, p.averages_from) for p in parts] == [("T", [], 1), ("", ["Caption."], 1)]
    three = _parts(parts_table(), 26)  # 7+10+5 and 2 gaps fit; nothing joins a part
    assert [[c.name for c in p.columns][1:] for p in three] == [
        ["A (baseline)", "W/T/L"],
        ["B", "W/T/L"],
        ["C"],
    ]
    assert [(p.title, p.caption) for p in three] == [("T", []), ("", []), ("", ["Caption."])]


# -- several models' table --


def test_the_models_table_sets_each_figure_in_its_column_with_headers_judged_recall_and_checks():
    """Two models on scifact and fiqa, worked by hand: the first stage's nDCG@10 (0.6, 0.1) and
    R@100 (0.75, 0.3) once; per model its reranked value with Δ from the first stage and its
    Judged@10 beside it; queries; the published check (scifact's 0.6 is its figure: OK). The
    average BEIR-13 is the mean of both rows and follows them (averages_from 2)."""

    def values(m_scifact, m_fiqa, judged_scifact, judged_fiqa):
        return {
            ("scifact", "first_stage", "nDCG@10"): [0.5, 0.7],
            ("scifact", "first_stage", "R@100"): [1.0, 0.5],
            ("scifact", "reranked", "nDCG@10"): m_scifact,
            ("scifact", "reranked", "Judged@10"): judged_scifact,
            ("fiqa", "first_stage", "nDCG@10"): [0.1, 0.1],
            ("fiqa", "first_stage", "R@100"): [0.4, 0.2],
            ("fiqa", "reranked", "nDCG@10"): m_fiqa,
            ("fiqa", "reranked", "Judged@10"): judged_fiqa,
        }

    data = manifest(
        [record("scifact", reference_ndcg10=0.6), record("fiqa")], average_rows=["scifact", "fiqa"]
    )
    other = second_model(data)
    table = models_table(
        [
            report(data, values([0.6, 0.8], [0.1, 0.3], [0.9, 0.7], [0.5, 0.5])),
            report(other, values([0.9, 0.9], [0.0, 0.2], [0.3, 0.3], [0.6, 0.6])),
        ]
    )
    assert [(c.name, c.terminal, c.numeric, c.label, c.follows) for c in table.columns] == [
        ("Dataset", None, False, "", False),
        ("nDCG@10 first stage", "nDCG@10\nfirst stage", True, "", False),
        ("R@100 first stage", "R@100\nfirst stage", True, "", False),
        ("m", None, True, "m", False),
        ("Judged@10 m", "Judged@10", True, "", True),
        ("m2", None, True, "m2", False),
        ("Judged@10 m2", "Judged@10", True, "", True),
        ("Queries", None, True, "", False),
        ("First stage nDCG@10 vs published", "nDCG@10\nfirst stage\nvs published", True, "", False),
    ]
    assert [[e.text for e in row] for row in table.rows] == [
        ["scifact", "0.6000", "0.7500", "0.7000 (+0.1000)", "0.8000", "0.9000 (+0.3000)", "0.3000", "2",
         "OK"],
        ["fiqa", "0.1000", "0.3000", "0.2000 (+0.1000)", "0.5000", "0.1000 (+0.0000)", "0.6000", "2", ""],
        ["BEIR-13", "0.3500", "0.5250", "0.4500 (+0.1000)", "0.6500", "0.5000 (+0.1500)", "0.4500", "4", ""],
    ]  # fmt: skip
    assert [[i for i, e in enumerate(row) if e.bold] for row in table.rows] == [[5], [3], [5]]
    assert table.averages_from == 2
    assert table.title == "nDCG@10 on beir (top-100), 2 models"
    # Judged@10 as the metric: each model's own column holds it, no second Judged@10 column
    data["protocol"]["metrics"] = ["Judged@10"]
    judged = {
        (d, s, "Judged@10"): [0.5, 0.5] for d in ("scifact", "fiqa") for s in ("first_stage", "reranked")
    }
    table = models_table([report(data, judged), report(data, judged)])
    assert [c.name for c in table.columns][3:6] == ["m", "m", "Queries"]


# -- the figure: what it draws --


def test_the_figure_draws_no_bar_where_a_value_is_missing_labels_above_the_error_bar_and_fits_them():
    """A bar the run lacks has no height (NaN, not a zero-height bar); a bar with an error bar
    (0.45, 0.05 below and 0.1 above) reaches 0.40 to 0.55 and its value and mark start at its top,
    0.55; the value axis is named by the chart's axis, starts at 0 and rises above the highest bar
    (0.7)."""
    import math

    from matplotlib.container import BarContainer, ErrorbarContainer

    from rerank_eval.reporting.chart import Bar, BarChart, Series
    from rerank_eval.reporting.render.plot import figure

    chart = BarChart(
        groups=["scifact", "Average"],
        series=[
            Series("base (baseline)", [Bar(0.5), Bar(0.4)], True),
            Series("run", [Bar(0.6), Bar(0.45, error=(0.05, 0.1), mark="▲")]),
            Series("published", [Bar(None), Bar(0.7)]),
        ],
        axis="nDCG@10",
        caption="A caption.",
    )
    drawn = figure(chart)
    assert (drawn.get_supxlabel(), drawn.get_suptitle()) == ("A caption.", "")  # the caption under the axes
    axes = drawn.axes[0]
    bars = {c.get_label(): c.patches for c in axes.containers if isinstance(c, BarContainer)}
    assert math.isnan(bars["published"][0].get_height()) and bars["published"][1].get_height() == 0.7
    # three bars a row, each 0.8/3 wide, side by side around the row's position (0, 1)
    centres = [p.get_x() + p.get_width() / 2 for label in bars for p in bars[label]]
    width = 0.8 / 3
    assert list(bars) == ["base (baseline)", "run", "published"]
    assert centres == pytest.approx([-width, 1 - width, 0, 1, width, 1 + width])
    assert [p.get_width() for patches in bars.values() for p in patches] == pytest.approx([width] * 6)
    # the baseline hatched on white, the others filled
    assert [(p.get_facecolor(), p.get_hatch()) for p in bars["base (baseline)"]] == [
        ((1, 1, 1, 1), "////")
    ] * 2
    assert all(p.get_facecolor() != (1, 1, 1, 1) and not p.get_hatch() for p in bars["run"])
    # the missing bar said at its base
    assert [t.xy for t in axes.texts if t.get_text() == "n/a"] == [pytest.approx((width, 0.0))]
    (errorbar,) = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    ends = [
        (s[0][1], s[1][1]) for s in errorbar.lines[2][0].get_segments() if len(s) and np.isfinite(s).all()
    ]
    np.testing.assert_allclose(ends, [(0.40, 0.55)])
    at_top = {t.get_text(): t.xy[1] for t in axes.texts if t.get_text() in ("0.450", "▲")}
    assert at_top == pytest.approx({"0.450": 0.55, "▲": 0.55})
    assert axes.get_ylabel() == "nDCG@10"
    low, high = axes.get_ylim()
    assert low == 0 and high > 0.7


def test_a_figure_of_twelve_bars_fits_one_column_and_of_thirteen_takes_the_page():
    from rerank_eval.reporting.chart import Bar, BarChart, Series
    from rerank_eval.reporting.render.plot import COLUMN, PAGE, figure_size

    def chart(groups: int, series: int) -> BarChart:
        runs = [Series(f"r{i}", [Bar(0.5)] * groups) for i in range(series)]
        return BarChart([f"g{i}" for i in range(groups)], runs, "nDCG@10", "")

    assert (COLUMN, PAGE) == ((3.4, 2.8), (7.0, 3.2))
    assert [figure_size(chart(*shape)) for shape in ((6, 2), (4, 3), (13, 1), (1, 13))] == [
        COLUMN,
        COLUMN,
        PAGE,
        PAGE,
    ]


def test_the_long_csv_has_a_line_per_row_and_run_with_its_flags_and_intervals_in_their_columns(pair):
    """Every row in the table's order, the baseline's line then the compared run's, each flagged
    baseline (base only), published (neither) and partial (neither: both have every row); the
    interval's ends in ci_low and ci_high on the compared run's average lines only; numbers in ten
    significant digits."""
    lines = list(csv.DictReader(comparison_csv(pair).splitlines()))
    assert list(lines[0]) == [
        "metric", "dataset", "kind", "run", "value", "delta", "p_value", "p_adjusted", "wins", "ties",
        "losses", "ci_low", "ci_high", "baseline", "published", "significant", "partial",
    ]  # fmt: skip
    rows = [("fiqa", "dataset"), ("cqadupstack", "group"), ("scifact", "dataset")]
    rows += [("BEIR-13", "average"), ("Average, all 3 rows", "average")]
    assert [(line["metric"], line["dataset"], line["kind"], line["run"]) for line in lines] == [
        ("nDCG@10", name, kind, run) for name, kind in rows for run in ("base", "better")
    ]
    assert [(line["baseline"], line["published"], line["partial"]) for line in lines] == [
        ("True", "False", "False"),
        ("False", "False", "False"),
    ] * 5
    intervals = {row.name: row.cells["better"].interval for row in pair.rows if row.kind == "average"}
    for line in lines:
        if line["run"] == "better" and line["kind"] == "average":
            low, high = intervals[line["dataset"]]
            assert (float(line["ci_low"]), float(line["ci_high"])) == pytest.approx((low, high))
            assert float(line["ci_low"]) < float(line["ci_high"])
        else:
            assert (line["ci_low"], line["ci_high"]) == ("", "")
        for field in ("value", "delta", "p_value", "p_adjusted"):
            assert line[field] == ("" if not line[field] else f"{float(line[field]):.10g}"), field


def run_table(label: str, title: str = "", caption: list[str] | None = None) -> ResultTable:
    return ResultTable(
        title,
        [Column("Dataset", numeric=False), Column(label, label=label)],
        [[Entry("scifact"), Entry("0.7000")], [Entry("Avg"), Entry("–")]],
        caption or [],
        averages_from=1,
    )


def test_the_terminal_table_framed_unframed_and_keyed_written_out_by_hand():
    """Names left-aligned, figures right-aligned. Framed (20 characters: 7 + 6 and the frame's 7):
    a rule above the averages. At 19 unframed, two spaces between columns and none at the edges: a
    blank line above the averages. A label too long for 20 unframed: the key [1] heads its column
    and a line above names it whole."""
    assert terminal_lines(run_table("run-a"), 20, colour=False) == [
        "┏━━━━━━━━━┳━━━━━━━━┓",
        "┃ Dataset ┃  run-a ┃",
        "┡━━━━━━━━━╇━━━━━━━━┩",
        "│ scifact │ 0.7000 │",
        "├─────────┼────────┤",
        "│ Avg     │      – │",
        "└─────────┴────────┘",
    ]
    assert terminal_lines(run_table("run-a"), 19, colour=False) == [
        "Dataset   run-a",
        "scifact  0.7000",
        "",
        "Avg           –",
    ]
    assert terminal_lines(run_table("a-long-run-name"), 20, colour=False) == [
        "[1] a-long-run-name",
        "Dataset     [1]",
        "scifact  0.7000",
        "",
        "Avg           –",
    ]
    titled = terminal_lines(run_table("run-a", "T", ["c1", "c2"]), 20, colour=False)
    assert [titled[0].strip(), titled[1][0], titled[-3][0]] == ["T", "┏", "└"]
    assert [line.strip() for line in titled[-2:]] == ["c1", "c2"]


def test_a_figures_format_is_its_file_names_suffix_in_any_case_and_only_one_offered():
    from pathlib import Path

    from rerank_eval.errors import ParameterError
    from rerank_eval.reporting.render.plot import plot_format

    assert [plot_format(Path(name)) for name in ("fig.PNG", "a.b.Pdf", "x.svg")] == ["png", "pdf", "svg"]
    for refused in ("fig.ps", "fig.svgz", "fig"):
        with pytest.raises(ParameterError):
            plot_format(Path(refused))


def test_a_terminal_table_in_parts_separates_them_by_a_blank_line_and_squeezes_a_part_too_wide():
    """At 43 two parts, each headed by the naming column, a blank line between them; the title above
    the first, the caption under the last. At 12 even a part folded in the last style (keys, one
    space, header words folded) is too wide: rich folds its cells in that style, and no character is
    cut."""
    from rerank_eval.reporting.render.terminal import PARTS, _layout

    lines = terminal_lines(parts_table(), 43, colour=False)
    headers = [i for i, line in enumerate(lines) if line.startswith("Dataset")]
    assert len(headers) == 2 and lines[headers[1] - 1] == ""
    assert lines[headers[0] - 1].strip() == "T" and lines[-1].strip() == "Caption."
    assert [line for line in lines if line.startswith(("scifact", "Avg"))][:2] == [
        "scifact  0.5000 (+0.1000)  1/0/1",
        "Avg      0.5000 (+0.1000)  1/0/1",
    ]
    assert _layout(parts_table(), 12, PARTS) == (PARTS[-1], None)
    narrow = terminal_lines(parts_table(), 12, colour=False)
    assert "…" not in "".join(narrow) and narrow[-1].strip() == "Caption."
    assert [line for line in narrow if line.startswith("[1]")] == ["[1] A", "[1] B", "[1] C"]


def test_a_results_caption_states_its_protocol_and_notes_each_in_its_own_words():
    """Written out by hand: two first stages, the average's members, the queries without candidates,
    the Seconds note with the queries taken from the journal, and both measures checked against two
    sources' published figures."""
    data = manifest(
        [
            record("scifact", reference_ndcg10=0.6, reference_r100=0.7, reference_name="pyserini"),
            record("fiqa", label="SPLADE", reference_ndcg10=0.2, reference_name="beir"),
        ],
        average_rows=["scifact", "fiqa"],
    )
    data["datasets"][0]["coverage"]["queries_without_run"] = 1
    data["datasets"][1]["coverage"]["queries_without_run"] = 2
    data["datasets"][0]["timings"]["resumed_queries"] = 3
    data["datasets"][1]["timings"]["resumed_queries"] = 4
    values = {k: v for k, v in FORUMS.items() if k[0] in ("scifact", "fiqa")}
    values |= {(d, "first_stage", "R@100"): [0.7, 0.7] for d in ("scifact", "fiqa")}
    assert report(data, values).caption() == [
        "First stage: BM25; SPLADE; top-100 candidates in first-stage order.",
        "BEIR-13: mean over scifact, fiqa.",
        "Judged queries without candidates score 0: scifact (1 of 2), fiqa (2 of 2).",
        "Seconds time this run's scoring, not the scores it took from the score journal "
        "(queries: scifact 3, fiqa 4).",
        "First stage vs published (nDCG@10 and R@100): OK within ±0.0005 of the published figure "
        "(beir, pyserini), else the difference.",
    ]


def test_the_comparison_tables_columns_rule_title_and_what_each_run_is(tmp_path, monkeypatch):
    """A pass-through baseline (no reranker) on BM25, a run on SPLADE and BM25 over two datasets,
    and a published column: W/T/L follows its run; the published header puts its first stage on
    a second terminal line and keeps its label; the rule falls before the first average (after
    fiqa, cqadupstack, scifact); the title and caption name every first stage."""
    from rerank_eval.reporting.compare import published

    monkeypatch.setattr(published, "PUBLISHED_DIR", tmp_path)
    figures = {"name": "some", "source": "s", "first_stage": "f", "rows": {"nDCG@10": {"scifact": 0.7}},
               "averages": {}}  # fmt: skip
    (tmp_path / "some.json").write_text(json.dumps(figures))
    base = make_result(tmp_path, "base", 0.0, noise=0.0)
    saved = json.loads((base / "manifest.json").read_text())
    saved["model"]["family"] = "first-stage-order"
    (base / "manifest.json").write_text(json.dumps(saved))
    other = make_result(tmp_path, "two", 0.05, seed=1)
    saved = json.loads((other / "manifest.json").read_text())
    saved["datasets"][0]["first_stage"]["label"] = "SPLADE"
    (other / "manifest.json").write_text(json.dumps(saved))
    result = Comparison([load_result(base), load_result(other)], published=["some"], force=True)
    table = comparison_table(result)
    assert [(c.name, c.terminal, c.numeric, c.label, c.follows) for c in table.columns] == [
        ("Dataset", None, False, "", False),
        ("base (baseline)", None, True, "base", False),
        ("two", None, True, "two", False),
        ("W/T/L", None, True, "", True),
        ("some (published), first stage: f", "some (published)\nfirst stage: f", True, "some (published)",
         False),
    ]  # fmt: skip
    assert [row[0].value for row in table.rows][table.averages_from :] == ["BEIR-13", "Average, all 3 rows"]
    assert table.averages_from == 3
    alone = [make_result(tmp_path / "one", name, 0.0, datasets=["scifact"]) for name in ("a", "b")]
    assert comparison_table(Comparison([load_result(folder) for folder in alone])).averages_from is None
    for folder in alone:  # two runs of no reranker are named in one line, in the runs' order
        saved = json.loads((folder / "manifest.json").read_text())
        saved["model"]["family"] = "first-stage-order"
        (folder / "manifest.json").write_text(json.dumps(saved))
    both = comparison_table(Comparison([load_result(folder) for folder in alone])).caption
    assert "a, b: no reranker; the first stage's order and values." in both
    assert table.title == "Comparison: nDCG@10; first stage: BM25; SPLADE"
    assert "base: no reranker; the first stage's order and values." in table.caption
    assert "First stages: base: BM25; two: BM25, SPLADE." in table.caption


def test_a_results_summary_csv_writes_ten_decimals_as_earlier_versions_did():
    """scifact's first stage 0.6, reranked 0.7 and Δ 0.7 - 0.6 (0.09999999999999998 in floats) in
    ten decimals; the group's members joined by semicolons; an absent Judged@10 left empty."""
    from rerank_eval.reporting.render.data import summary_csv

    lines = summary_csv(forums_report()).splitlines()
    assert lines[0] == "dataset,kind,measure,first_stage,reranked,delta,queries,members"
    assert "scifact,dataset,nDCG@10,0.6000000000,0.7000000000,0.1000000000,2," in lines
    assert "group,group,nDCG@10,0.3000000000,0.3500000000,0.0500000000,3,forum-a;forum-b" in lines
    assert "scifact,dataset,Judged@10,,,,2," in lines
