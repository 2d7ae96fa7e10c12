"""`export` and `compare`: saved result folders rendered again, or set side by side, without
recomputing a score."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from rerank_eval.cli.app import app, console, user_errors
from rerank_eval.reporting.render.plot import FORMATS


@app.command("export")
@user_errors
def export(
    result: Annotated[
        Path,
        typer.Argument(
            metavar="RESULT",
            help="A result folder written by a benchmark command (a folder of several models' results: "
            "their one table).",
        ),
    ],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help=(
                "Write the summary table (one line per dataset and measure, led by model and suite "
                "columns) to this CSV file."
            ),
        ),
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the table as a self-contained HTML page.")
    ] = None,
) -> None:
    """Re-render a saved result (table, CSV, HTML) without recomputing anything."""
    from rerank_eval.errors import UserError
    from rerank_eval.reporting.compare.guard import one_table_problem
    from rerank_eval.reporting.render.data import labelled_summary_csv
    from rerank_eval.reporting.render.html import html
    from rerank_eval.reporting.render.terminal import terminal_table
    from rerank_eval.reporting.report import Report, results_table
    from rerank_eval.results.folder import load_results
    from rerank_eval.results.outputs import check_output_paths

    check_output_paths([csv, html_out])
    results = load_results([result])
    problem = one_table_problem(results) if len(results) > 1 else None
    if problem:
        raise UserError(
            f"the results in {result} are not one table: {problem}; set them side by side with "
            f"`rerank-eval compare {result}`"
        )
    reports = [Report(saved.manifest, saved.per_query) for saved in results]
    table = results_table(reports)
    console.print(terminal_table(table))
    write_outputs([(csv, lambda: labelled_summary_csv(reports)), (html_out, lambda: html(table))])


def write_outputs(outputs: list[tuple[Path | None, Callable[[], str | bytes]]]) -> None:
    """Every requested output rendered first, then each written atomically and said so: an output
    that cannot be rendered leaves none of the command's written."""
    from rerank_eval.results.outputs import write_output

    rendered = [(path, render()) for path, render in outputs if path is not None]
    for path, content in rendered:
        data = content.encode("utf-8") if isinstance(content, str) else content
        write_output(path, lambda target, data=data: target.write_bytes(data))
        console.print(f"wrote {path}")


@app.command("compare")
@user_errors
def compare(
    results: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULT",
            help="Result folders (a folder of several models' results counts as each of them).",
        ),
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="The run deltas are against: its label as the table shows it, or its folder's name.",
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option("--metric", help="The measure to compare (from per_query.csv).")
    ] = "nDCG@10",
    test: Annotated[
        str, typer.Option("--test", help="t-test (paired, two-sided) or randomization.")
    ] = "t-test",
    published: Annotated[
        list[str] | None,
        typer.Option(
            "--published", help="Add published figures (e.g. jina-reranker-v3, pyserini-bm25-flat)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Compare runs whose protocols differ (the table says so).")
    ] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Long CSV: one line per row and run.")] = None,
    csv_wide: Annotated[Path | None, typer.Option("--csv-wide", help="Wide CSV: rows × runs.")] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="A Markdown table.")] = None,
    latex_out: Annotated[Path | None, typer.Option("--latex", help="A LaTeX (booktabs) table.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Everything, as JSON.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="The table as a self-contained HTML page.")
    ] = None,
    plot_out: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help=(
                "A figure for a paper: bars per dataset with values, significance marks and intervals; "
                f"the format follows the extension (.{', .'.join(FORMATS)})."
            ),
        ),
    ] = None,
) -> None:
    """Compare saved results: deltas vs a baseline with significance marks, win/tie/loss, averages."""
    from rerank_eval.reporting.compare.chart import comparison_chart
    from rerank_eval.reporting.compare.comparison import Comparison
    from rerank_eval.reporting.compare.table import comparison_table
    from rerank_eval.reporting.render import data
    from rerank_eval.reporting.render.html import html
    from rerank_eval.reporting.render.latex import latex
    from rerank_eval.reporting.render.markdown import markdown
    from rerank_eval.reporting.render.plot import figure_file, plot_format
    from rerank_eval.reporting.render.terminal import terminal_table
    from rerank_eval.results.folder import load_results
    from rerank_eval.results.outputs import check_output_paths

    check_output_paths([csv, csv_wide, markdown_out, latex_out, json_out, html_out, plot_out])
    plot_type = plot_format(plot_out) if plot_out is not None else None
    comparison = Comparison(load_results(results), metric, baseline, test, published, force)
    table = comparison_table(comparison)
    console.print(terminal_table(table))
    write_outputs(
        [
            (csv, lambda: data.comparison_csv(comparison)),
            (csv_wide, lambda: data.comparison_csv(comparison, wide=True)),
            (markdown_out, lambda: markdown(table)),
            (latex_out, lambda: latex(table)),
            (json_out, lambda: data.comparison_json(comparison)),
            (html_out, lambda: html(table)),
            (plot_out, lambda: figure_file(comparison_chart(comparison), plot_type)),
        ]
    )
