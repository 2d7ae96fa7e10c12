"""`compare --html` and `export --html`: a self-contained page showing what the other formats show.

The page is parsed with the standard library's HTML parser; its cells must be the Markdown table's
cells (both lay out the same neutral table), its figures the means of the saved per-query values,
and every label from a result must come back as written (escaped in the page).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerank_eval.cli import app
from rerank_eval.results.folder import load_result
from tests.test_comparison import make_result


class Page(HTMLParser):
    """Header cells, body rows (text and bold flag per cell, the tbody's class), caption lines."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.header: list[str] = []
        self.rows: list[tuple[str | None, list[tuple[str, bool]]]] = []
        self.caption: list[str] = []
        self.title = ""
        self._in_body = False
        self._body_class: str | None = None
        self._text: list[str] | None = None
        self._bold = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attributes = dict(attrs)
        if tag == "tbody":
            self._in_body, self._body_class = True, attributes.get("class")
        elif tag == "tr" and self._in_body:
            self.rows.append((self._body_class, []))
        elif tag in ("td", "th", "p", "title"):
            self._text, self._bold = [], False
        elif tag == "strong":
            self._bold = True

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        text = "".join(self._text or [])
        if tag == "th":
            self.header.append(text)
        elif tag == "td":
            self.rows[-1][1].append((text, self._bold))
        elif tag == "p":
            self.caption.append(text)
        elif tag == "title":
            self.title = text
        if tag in ("td", "th", "p", "title"):
            self._text = None
        if tag == "tbody":
            self._in_body, self._body_class = False, None


def parse(path: Path) -> tuple[Page, str]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return page, text


def cli(*args) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("html")
    return {
        "base": make_result(root, "base", 0.0, noise=0.0),
        "better": make_result(root, "better", 0.08, seed=1),
        "odd": make_result(root, 'a<b>&"c', -0.03, seed=3),
    }


def markdown_text(cell: str) -> str:
    """A Markdown cell's text as shown: backslash escapes and entities undone."""
    import html
    import re

    return html.unescape(re.sub(r"\\(.)", r"\1", cell))


def markdown_cells(path: Path) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """The table's header and body cells (text, bold), after the title paragraph. Cells are split at
    ` | ` as Markdown does at an unescaped `|`."""
    lines = path.read_text(encoding="utf-8").split("\n\n")[1].splitlines()
    header = [markdown_text(cell.strip()) for cell in lines[0].strip("|").split(" | ")]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip()[2:-2].split(" | ")]
        rows.append([(markdown_text(c.replace("**", "")), c.startswith("**")) for c in cells])
    return header, rows


def test_compare_html_is_self_contained_and_shows_the_markdown_tables_cells(results, tmp_path):
    page_path, markdown_path = tmp_path / "compare.html", tmp_path / "compare.md"
    cli("compare", results["base"], results["better"], results["odd"], "--html", page_path,
        "--markdown", markdown_path, "--published", "jina-reranker-v3")  # fmt: skip
    page, text = parse(page_path)
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in text
    assert not {"script", "link", "img", "iframe"} & set(page.tags)
    assert "src=" not in text and "href=" not in text and "http" not in text.split("<caption>")[0]
    header, rows = markdown_cells(markdown_path)
    assert page.header == header
    assert [cells for _, cells in page.rows] == rows
    # the averages, and only they, in their own body (a rule above them)
    assert [cls for cls, cells in page.rows] == [None, None, None, "averages", "averages"]
    assert [row[0][0] for row in rows[-2:]] == ["BEIR-13", "Average, all 3 rows"]
    assert page.title.startswith("Comparison: nDCG@10")
    assert any(line.startswith("WARNING: jina-reranker-v3 (published) reranked") for line in page.caption)


def test_markdown_shows_odd_names_as_written_in_their_own_cells(results, tmp_path):
    """A label with Markdown's and HTML's special characters keeps the table's shape (a `|` once
    split its cell) and reads back as written; the title names the first stage."""
    odd = make_result(tmp_path, 'mini,"lm|<b>&_%#*', 0.02, seed=5)
    path = tmp_path / "odd.md"
    cli("compare", results["base"], odd, "--markdown", path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("**Comparison: nDCG@10; first stage: BM25**\n\n")
    header, rows = markdown_cells(path)
    assert header == ["Dataset", "base (baseline)", 'mini,"lm|<b>&_%#*', "W/T/L"]
    separator = text.split("\n\n")[1].splitlines()[1]
    assert separator.count("|") - 1 == len(header) and all(len(row) == len(header) for row in rows)
    assert "<b>" not in text


def test_labels_from_results_are_escaped_and_read_back_as_written(results, tmp_path):
    page_path = tmp_path / "odd.html"
    cli("compare", results["base"], results["odd"], "--html", page_path)
    page, text = parse(page_path)
    assert 'a<b>&"c' in page.header
    assert "a&lt;b&gt;&amp;&quot;c" in text and "a<b>" not in text


def test_export_html_shows_the_means_of_the_saved_values(results, tmp_path):
    page_path = tmp_path / "export.html"
    cli("export", results["better"], "--html", page_path)
    page, _ = parse(page_path)
    frame = load_result(results["better"]).per_query
    nDCG = frame[frame.measure == "nDCG@10"]
    column = page.header.index("nDCG@10 reranked")
    by_row = {cells[0][0]: cells for _, cells in page.rows}
    for dataset in ("scifact", "fiqa"):
        expected = nDCG[(nDCG.dataset == dataset) & (nDCG.stage == "reranked")].value.mean()
        assert by_row[dataset][column][0] == f"{expected:.4f}"
    forums = nDCG[nDCG.dataset.str.startswith("cqa") & (nDCG.stage == "reranked")]
    mean_of_forums = forums.groupby("dataset").value.mean().mean()
    assert by_row["cqadupstack"][column][0] == f"{mean_of_forums:.4f}"


def test_an_html_path_that_cannot_be_written_is_refused_before_any_work(results, tmp_path):
    for args in (["export", results["base"]], ["compare", results["base"], results["better"]]):
        result = CliRunner().invoke(app, [*map(str, args), "--html", str(tmp_path / "no" / "x.html")])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: cannot write") and "does not exist" in result.output
        assert "\n" not in result.output.strip() and not (tmp_path / "no").exists()
