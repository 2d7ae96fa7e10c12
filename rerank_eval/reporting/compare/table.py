"""A comparison described once as a neutral table: its header, cells and caption.

Each compared run's cell holds its value (bold where best in the row), Δ vs the baseline with †
where the adjusted p-value is below α, that adjusted p-value itself (the one † reads, so the two
never disagree), and for averages the bootstrap interval; W/T/L follows each compared run;
published figures come last, untested.
"""

from __future__ import annotations

from rerank_eval.reporting.compare.comparison import Cell, Comparison, Row
from rerank_eval.reporting.compare.stats import ALPHA, SEED, paired_test
from rerank_eval.reporting.table import Column, Entry, ResultTable


def caption(comparison: Comparison) -> list[str]:
    protocol = comparison.baseline.manifest.protocol
    test = paired_test(comparison.test).description
    compared = len(comparison.runs) - 1  # against the baseline; none for one result alone
    family = f"the {compared} compared run{'' if compared == 1 else 's'}"
    if any(0 < size < compared for size in comparison.families.values()):  # a run lacks a tested row
        family = f"the compared runs each row has ({compared} where it has all)"
    lines = [
        f"{comparison.metric}, reranked. Δ vs {comparison.baseline.label} and its p-value ({test} over "
        f"per-query values, Holm–Bonferroni-adjusted across {family}); † = p < {ALPHA}; "
        "W/T/L = queries won/tied/lost vs the baseline."
        if compared
        else f"{comparison.metric}, reranked.",
    ]
    lines += _what_each_run_is(comparison)
    groups = [row.name for row in comparison.rows if row.kind == "group"]
    if groups:
        lines.append(f"{', '.join(groups)}: queries of all members pooled for the test and W/T/L.")
    if any(row.kind == "average" for row in comparison.rows):
        lines.append(
            f"Averages: Δ, test and bootstrap 95% interval (seed {SEED}) over the per-row values of "
            "the rows both runs have; W/T/L = rows won/tied/lost."
        )
    lines.append(f"Top-{protocol.top_k} candidates in {protocol.candidate_order} order.")
    for column in comparison.published:
        notes = f" {column.notes}" if column.notes else ""
        lines.append(
            f"{column.label}: {column.source}; first stage: {column.first_stage}; not tested.{notes}"
        )
    lines += [f"Note: {f}." for f in comparison.footnotes]
    lines += [f"WARNING: {w}." for w in comparison.warnings]
    return lines


def _what_each_run_is(comparison: Comparison) -> list[str]:
    """What "reranked" does not say of some runs: a run of no reranker is its first stage's order
    and values, and where the runs' first stages differ, which run had which."""
    lines = []
    passing = [run.label for run in comparison.runs if run.manifest.model.keeps_first_stage_order]
    if passing:
        lines.append(f"{', '.join(passing)}: no reranker; the first stage's order and values.")
    stages = {run.label: ", ".join(run.manifest.first_stage_labels()) for run in comparison.runs}
    if len(set(stages.values())) > 1:
        lines.append("First stages: " + "; ".join(f"{run}: {stage}" for run, stage in stages.items()) + ".")
    return lines


def p_text(p: float) -> str:
    """A p-value in few digits (p=0.20, p=0.043, p<0.001), never rounded across α: 0.0499 shows as
    0.0499, not 0.050, which would contradict the † beside it."""
    if p < 0.001:
        return "p<0.001"
    digits = 2 if p >= 0.1 else 3
    while (float(f"{p:.{digits}f}") < ALPHA) != (p < ALPHA):
        digits += 1
    return f"p={p:.{digits}f}"


def _entry(cell: Cell, best: float | None, plain: bool) -> Entry:
    """The value, bold when best; for a compared run also Δ, the significance mark, the adjusted
    p-value and the interval."""
    if cell.value is None:
        return Entry("–")
    note = ""
    if not plain and cell.delta is not None:  # a compared run's cell (p: none where the test is undefined)
        p = "p=n/a" if cell.p_adjusted is None else p_text(cell.p_adjusted)
        note = f" ({cell.delta:+.4f}{'†' if cell.significant else ''}, {p})"
        if cell.interval:
            note += f" [{cell.interval[0]:+.4f}, {cell.interval[1]:+.4f}]"
    return Entry(f"{cell.value:.4f}", note, bold=best is not None and cell.value == best)


def _columns(comparison: Comparison) -> list[Column]:
    columns = [Column("Dataset", numeric=False)]
    for run in comparison.runs:
        name = run.label + (" (baseline)" if run is comparison.baseline else "")
        columns.append(Column(name, label=run.label))
        if run is not comparison.baseline:
            columns.append(Column("W/T/L", follows=True))
    for published in comparison.published:
        name = f"{published.label}, first stage: {published.first_stage}"
        columns.append(Column(name, name.replace(", first stage:", "\nfirst stage:"), label=published.label))
    return columns


def _entries(comparison: Comparison, row: Row) -> list[Entry]:
    values = [c.value for label, c in row.cells.items() if c.value is not None and label not in row.short]
    best = max(values) if values else None

    def entry(label: str, plain: bool) -> Entry:
        # a value over only some of an average's rows is not ranked: never bold, even when it ties
        return _entry(row.cells[label], None if label in row.short else best, plain)

    entries = [Entry(row.name)]
    for run in comparison.runs:
        entries.append(entry(run.label, run is comparison.baseline))
        if run is not comparison.baseline:
            cell = row.cells[run.label]
            entries.append(Entry("" if cell.wins is None else f"{cell.wins}/{cell.ties}/{cell.losses}"))
    entries += [entry(published.label, True) for published in comparison.published]
    return entries


def comparison_table(comparison: Comparison) -> ResultTable:
    title = f"Comparison: {comparison.metric}; first stage: {'; '.join(comparison.run_first_stages())}"
    averages = [index for index, row in enumerate(comparison.rows) if row.kind == "average"]
    return ResultTable(
        title,
        _columns(comparison),
        [_entries(comparison, row) for row in comparison.rows],
        caption(comparison),
        averages[0] if averages else None,
    )
