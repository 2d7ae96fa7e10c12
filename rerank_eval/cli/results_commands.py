"""`export` and `compare`: saved result folders rendered again, or set side by side, without
recomputing a score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank_eval.cli.app import app, console, user_errors


@app.command("export")
@user_errors
def export(
    result: Annotated[Path, typer.Argument(help="A result folder written by a benchmark command.")],
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Write the summary table (one line per dataset and measure) to this CSV file."
        ),
    ] = None,
) -> None:
    """Re-render a saved result (table, CSV) without recomputing anything."""
    from rerank_eval.report import Report
    from rerank_eval.results import check_output_paths, load_result, write_output

    check_output_paths([csv])
    saved = load_result(result)
    report = Report(saved.manifest, saved.per_query)
    console.print(report.table())
    if csv:
        write_output(csv, lambda path: path.write_text(report.summary_csv(), encoding="utf-8"))
        console.print(f"wrote {csv}")


@app.command("compare")
@user_errors
def compare(
    results: Annotated[
        list[Path],
        typer.Argument(help="Result folders (a folder of several models' results counts as each of them)."),
    ],
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="The run (model name or folder name) deltas are against.")
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
    markdown: Annotated[Path | None, typer.Option("--markdown", help="A Markdown table.")] = None,
    latex: Annotated[Path | None, typer.Option("--latex", help="A LaTeX (booktabs) table.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Everything, as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Grouped bars per dataset, as PNG.")] = None,
) -> None:
    """Compare saved results: deltas vs a baseline with significance marks, win/tie/loss, averages."""
    from rerank_eval.comparison import Comparison, check_plot_path
    from rerank_eval.results import check_output_paths, load_results, write_output

    check_output_paths([csv, csv_wide, markdown, latex, json_out, plot])
    if plot is not None:
        check_plot_path(plot)
    comparison = Comparison(load_results(results), metric, baseline, test, published, force)
    console.print(comparison.table())
    outputs = [
        (csv, lambda: comparison.to_csv()),
        (csv_wide, lambda: comparison.to_csv(wide=True)),
        (markdown, comparison.to_markdown),
        (latex, comparison.to_latex),
        (json_out, comparison.to_json),
    ]
    for path, render in outputs:
        if path is not None:
            write_output(path, lambda target, render=render: target.write_text(render(), encoding="utf-8"))
            console.print(f"wrote {path}")
    if plot is not None:
        write_output(plot, comparison.plot)
        console.print(f"wrote {plot}")
