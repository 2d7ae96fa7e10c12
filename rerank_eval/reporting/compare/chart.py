"""A comparison described once as grouped bars: a series per run (and published figure), a group
per row, the same significance (Holm-adjusted p below α) as the table's †, and the bootstrap
intervals of the averages as error bars."""

from __future__ import annotations

from rerank_eval.reporting.chart import Bar, BarChart, Series
from rerank_eval.reporting.compare.comparison import Cell, Comparison
from rerank_eval.reporting.compare.stats import ALPHA, paired_test

ABOVE, BELOW = "▲", "▼"


def _bar(cell: Cell) -> Bar:
    """Only tested cells (those with a Δ) are significant or have an interval. The interval is of Δ;
    drawn around the bar's top, its ends sit where the run's value would be at either end of it. A
    percentile interval need not hold the mean: a reach below zero is drawn as none."""
    error = None
    if cell.interval is not None:
        low, high = cell.interval
        error = (max(0.0, cell.delta - low), max(0.0, high - cell.delta))
    mark = (ABOVE if cell.delta > 0 else BELOW) if cell.significant else ""
    return Bar(cell.value, error, mark)


def chart_caption(comparison: Comparison, intervals: bool) -> str:
    protocol = comparison.baseline.manifest.protocol
    sentences = [
        f"{comparison.metric}, reranked; first stage: {'; '.join(comparison.run_first_stages())}; "
        f"top-{protocol.top_k} candidates in {protocol.candidate_order} order."
    ]
    if len(comparison.runs) > 1:
        sentences.append(
            f"{ABOVE}/{BELOW}: above/below {comparison.baseline.label} with p < {ALPHA} "
            f"({paired_test(comparison.test).description}, Holm–Bonferroni-adjusted)."
        )
    if intervals:
        sentences.append("Error bars: bootstrap 95% interval of the difference to the baseline.")
    if comparison.published:
        sentences.append("Published figures: as reported, not tested.")
    partial = [f"{row.name} ({', '.join(sorted(row.short))})" for row in comparison.rows if row.short]
    if partial:  # (the tables say so in a note; a bar alone would not)
        sentences.append(f"Averages over only some of their rows: {'; '.join(partial)}.")
    sentences += [f"WARNING: {warning}." for warning in comparison.warnings]
    return " ".join(sentences)


def comparison_chart(comparison: Comparison) -> BarChart:
    series = []
    for label in comparison.labels:
        baseline = label == comparison.baseline.label
        bars = [_bar(row.cells[label]) for row in comparison.rows]
        series.append(Series(f"{label} (baseline)" if baseline else label, bars, baseline))
    intervals = any(bar.error for s in series for bar in s.bars)
    return BarChart(
        [row.name for row in comparison.rows], series, comparison.metric, chart_caption(comparison, intervals)
    )
