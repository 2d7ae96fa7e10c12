"""The report of one result: every aggregate derived from saved per-query values.

Nothing here runs a model or a metric: dataset means, CQADupStack's mean of forums, suite averages
and deltas all come from `per_query.csv`, so a re-rendered table (`rerank-eval export`) is
identical to the one printed at the end of the run. `report_table` and `models_table` describe
reports as neutral tables; `reporting/render/` lays those out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from rerank_eval.reporting.layout import (
    average_rows,
    in_part,
    is_group,
    missing_members,
    query_mean,
    row_members,
)
from rerank_eval.reporting.table import Column, Entry, ResultTable, number
from rerank_eval.results.manifest import DatasetRecord, Manifest

# Pyserini calls a reproduction of its published BM25 figure "OK" within this distance.
REFERENCE_TOLERANCE = 5e-4
JUDGED = "Judged@10"
#: the first-stage measures with published figures, and the depth a run must keep for its own
#: value to be the published measure (its first-stage values are those of the top-k it keeps)
PUBLISHED_MEASURES = {"nDCG@10": 10, "R@100": 100}


@dataclass
class ReportRow:
    name: str
    kind: str  # "dataset", "group" or "average"
    values: dict[tuple[str, str], float]  # (stage, measure) -> mean
    queries: int
    seconds: float
    #: published first-stage figures by measure (nDCG@10, R@100), where the config has them
    references: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    in_average: bool = False
    #: a group's members in the suite that this row lacks: its mean is not the group's figure
    missing: list[str] = field(default_factory=list)

    def value(self, stage: str, measure: str) -> float | None:
        return self.values.get((stage, measure))


def _mean_values(rows: list[ReportRow]) -> dict[tuple[str, str], float]:
    keys = set.intersection(*(set(r.values) for r in rows)) if rows else set()
    return {key: sum(r.values[key] for r in rows) / len(rows) for key in keys}


def _combined(
    name: str, kind: str, rows: list[ReportRow], references: dict[str, float] | None = None
) -> ReportRow:
    return ReportRow(
        name=name,
        kind=kind,
        values=_mean_values(rows),
        queries=sum(r.queries for r in rows),
        seconds=sum(r.seconds for r in rows),
        references=references or {},
        members=[r.name for r in rows],
        in_average=kind == "group" and any(r.in_average for r in rows),
    )


def _dataset_references(record: DatasetRecord) -> dict[str, float]:
    figures = {"nDCG@10": record.first_stage.reference_ndcg10, "R@100": record.first_stage.reference_r100}
    return {measure: figure for measure, figure in figures.items() if figure is not None}


def _group_references(members: list[DatasetRecord]) -> dict[str, float]:
    """A group's published first-stage figures: its own nDCG@10 where every member's first stage
    carries the same (jina-embeddings-v3 on CQADupStack), else per measure the mean of its members'
    where each has one (BM25 on CQADupStack's forums), as the group's own value is the mean of its
    members'."""
    figures = [_dataset_references(m) for m in members]
    references = {
        measure: sum(f[measure] for f in figures) / len(figures)
        for measure in PUBLISHED_MEASURES
        if all(measure in f for f in figures)
    }
    own = {m.first_stage.group_reference_ndcg10 for m in members}
    if len(own) == 1 and None not in own:
        references["nDCG@10"] = own.pop()
    return references


class Report:
    """The rows of one result (datasets, groups, averages) with their means per stage and measure."""

    def __init__(self, manifest: Manifest, per_query: pd.DataFrame) -> None:
        self.manifest = manifest
        self.metrics: list[str] = list(manifest.protocol.metrics)
        self.recall = f"R@{manifest.protocol.top_k}"
        datasets = {row.name: row for row in self._dataset_rows(per_query)}
        records = {record.key: record for record in manifest.datasets}
        self.rows = []
        for name, members in row_members(manifest.datasets):
            if not is_group(name, members):
                self.rows.append(datasets[name])
                continue
            references = _group_references([records[m] for m in members])
            group = _combined(name, "group", [datasets[m] for m in members], references)
            group.missing = missing_members(name, members, manifest.suite.groups)
            self.rows.append(group)
        by_name = {row.name: row for row in self.rows}
        in_average = {row.name for row in self.rows if row.in_average}
        partial = frozenset(row.name for row in self.rows if row.missing)
        self.averages = [
            _combined(average.label, "average", [by_name[n] for n in average.names])
            for average in average_rows(list(by_name), in_average, manifest.suite, partial)
        ]

    def _dataset_rows(self, per_query: pd.DataFrame) -> list[ReportRow]:
        means = per_query.groupby(["dataset", "stage", "measure"])["value"].agg(query_mean)
        counts = per_query.groupby(["dataset", "stage", "measure"])["value"].size()
        rows = []
        for record in self.manifest.datasets:
            key = record.key
            values = {(s, m): float(v) for (d, s, m), v in means.items() if d == key}
            rows.append(
                ReportRow(
                    name=key,
                    kind="dataset",
                    values=values,
                    queries=int(counts.get((key, "reranked", self.metrics[0]), 0)),
                    seconds=float(record.timings.rerank_seconds),
                    references=_dataset_references(record),
                    in_average=record.in_average,
                )
            )
        return rows

    @property
    def checked_measures(self) -> list[str]:
        """The published measures some row has a figure for and the run measures over at least
        their depth (the first stage's R@100 over a top-50 would be its R@50)."""
        measured = {*self.metrics, self.recall}
        deep_enough = [m for m, depth in PUBLISHED_MEASURES.items() if self.manifest.protocol.top_k >= depth]
        return [m for m in deep_enough if m in measured and any(m in r.references for r in self.rows)]

    def reference_check(self, row: ReportRow, measure: str) -> str:
        """'OK' when the first stage reproduces its published figure of `measure`, else the
        difference; empty where either is missing."""
        value, reference = row.value("first_stage", measure), row.references.get(measure)
        if reference is None or value is None:
            return ""
        return reference_check(value, reference)

    def summary_frame(self) -> pd.DataFrame:
        """One line per row and measure: first-stage and reranked means, delta, queries.

        Timings stay in the manifest, so the summary of a rerun is byte-identical.
        """
        records = []
        for row in self.rows + self.averages:
            for measure in dict.fromkeys([*self.metrics, JUDGED, self.recall]):  # each once
                first, reranked = row.value("first_stage", measure), row.value("reranked", measure)
                records.append(
                    {
                        "dataset": row.name,
                        "kind": row.kind,
                        "measure": measure,
                        "first_stage": first,
                        "reranked": reranked,
                        "delta": None if first is None or reranked is None else reranked - first,
                        "queries": row.queries,
                        "members": ";".join(row.members),
                    }
                )
        return pd.DataFrame.from_records(records)

    def caption(self, one_model: bool = True) -> list[str]:
        """The table's notes; `one_model`: the table of one model's every measure, whose Seconds
        column the several-models table lacks, so that it says nothing of it."""
        protocol = self.manifest.protocol
        lines = [
            f"First stage: {'; '.join(self.manifest.first_stage_labels())}; top-{protocol.top_k} candidates "
            f"in {protocol.candidate_order} order."
        ]
        for row in self.rows:
            if row.missing:
                lines.append(f"{in_part(row.name, row.members, row.missing)}.")
            elif row.kind == "group":
                lines.append(
                    f"{row.name}: mean over its {len(row.members)} members ({', '.join(row.members)})."
                )
        for average in self.averages:
            lines.append(f"{average.name}: mean over {', '.join(average.members)}.")
        gaps = [
            f"{r.key} ({r.coverage.queries_without_run} of {r.coverage.judged_queries})"
            for r in self.manifest.datasets
            if r.coverage.queries_without_run
        ]
        if gaps:
            lines.append("Judged queries without candidates score 0: " + ", ".join(gaps) + ".")
        reused = [
            f"{r.key} {r.timings.resumed_queries}"
            for r in self.manifest.datasets
            if r.timings.resumed_queries
        ]
        if reused and one_model and not self.manifest.model.keeps_first_stage_order:
            lines.append(
                "Seconds time this run's scoring, not the scores it took from the score journal "
                f"(queries: {', '.join(reused)})."
            )
        if self.checked_measures:
            names = sorted({r.first_stage.reference_name or "" for r in self.manifest.datasets} - {""})
            lines.append(
                f"First stage vs published ({' and '.join(self.checked_measures)}): OK within "
                f"±{REFERENCE_TOLERANCE} of the published figure ({', '.join(names)}), else the difference."
            )
        return lines


def reference_check(value: float, reference: float) -> str:
    """'OK' within ±REFERENCE_TOLERANCE of the published figure, else the difference. A difference
    of exactly the tolerance is OK on both sides, though float subtraction leaves it a hair over on
    one (0.7320 − 0.7325 is −5.00000000000056e-4), hence the rounding."""
    difference = value - reference
    return "OK" if round(abs(difference), 9) <= REFERENCE_TOLERANCE else f"{difference:+.4f}"


def _averages_from(report: Report) -> int | None:
    return len(report.rows) if report.averages else None


def report_table(report: Report) -> ResultTable:
    """Every measure of one result, first stage and reranked, per row."""
    model = report.manifest.model
    # the bm25 preset's name could be read as the first stage's (which the caption names): said
    named = f"{model.name} (first-stage order, no reranker)" if model.keeps_first_stage_order else model.name
    title = f"{named} on {report.manifest.suite.name} (top-{report.recall[2:]})"
    columns = [Column("Dataset", numeric=False)]
    for metric in report.metrics:
        columns += [
            Column(f"{metric} first stage", f"{metric}\nfirst stage"),
            Column(f"{metric} reranked", f"{metric}\nreranked", follows=True),
            Column("Δ", follows=True),
        ]
    # Judged@10 reranked and the first stage's recall, unless a metric's own columns hold them
    trailing = [(stage, measure) for stage, measure in (("reranked", JUDGED), ("first_stage", report.recall))
                if measure not in report.metrics]  # fmt: skip
    for stage, measure in trailing:
        said = stage.replace("_", " ")
        columns.append(Column(f"{measure} {said}", f"{measure}\n{said}"))
    columns += [Column("Queries"), Column("Seconds")]
    checked = report.checked_measures
    columns += [Column(f"First stage {m} vs published", f"{m}\nfirst stage\nvs published") for m in checked]
    rows = []
    for row in report.rows + report.averages:
        cells = [Entry(row.name)]
        for metric in report.metrics:
            first, reranked = row.value("first_stage", metric), row.value("reranked", metric)
            delta = None if first is None or reranked is None else reranked - first
            cells += [Entry(number(first)), Entry(number(reranked)), Entry(number(delta, signed=True))]
        cells += [Entry(number(row.value(stage, measure))) for stage, measure in trailing]
        cells += [Entry(str(row.queries)), Entry(f"{row.seconds:.1f}")]
        cells += [Entry(report.reference_check(row, measure)) for measure in checked]
        rows.append(cells)
    return ResultTable(title, columns, rows, report.caption(), _averages_from(report))


def results_table(reports: list[Report]) -> ResultTable:
    """The table a run prints, and `export` prints again: one model's every measure, or several
    models' side by side."""
    return report_table(reports[0]) if len(reports) == 1 else models_table(reports)


def models_table(reports: list[Report]) -> ResultTable:
    """Several models reranking the same candidates: the first stage's value of the first metric,
    its recall and its published checks once, then per model its reranked value (its Δ from the
    first stage beside it) and its Judged@10.

    Rows are the first report's datasets, groups and averages; the best reranked value of each row
    is bold.
    """
    first = reports[0]
    metric = first.metrics[0]
    manifest = first.manifest
    title = f"{metric} on {manifest.suite.name} (top-{first.recall[2:]}), {len(reports)} models"
    checked = first.checked_measures
    recall = [first.recall] if first.recall != metric else []  # (its own column where it is the metric)
    columns = [Column("Dataset", numeric=False), Column(f"{metric} first stage", f"{metric}\nfirst stage")]
    columns += [Column(f"{measure} first stage", f"{measure}\nfirst stage") for measure in recall]
    judged = metric != JUDGED  # (where it is the metric, each model's own column holds it)
    for report in reports:
        name = report.manifest.model.name
        columns += [Column(name, label=name)]
        columns += [Column(f"{JUDGED} {name}", JUDGED, follows=True)] if judged else []
    columns.append(Column("Queries"))
    columns += [Column(f"First stage {m} vs published", f"{m}\nfirst stage\nvs published") for m in checked]
    by_name = [{row.name: row for row in r.rows + r.averages} for r in reports]
    rows = []
    for row in first.rows + first.averages:
        own = [rows_.get(row.name) for rows_ in by_name]
        values = [r.value("reranked", metric) if r else None for r in own]
        best = max((v for v in values if v is not None), default=None)
        baseline = row.value("first_stage", metric)
        cells = [Entry(row.name), Entry(number(baseline))]
        cells += [Entry(number(row.value("first_stage", measure))) for measure in recall]
        for value, model_row in zip(values, own, strict=True):
            delta = None if value is None or baseline is None else value - baseline
            note = "" if delta is None else f" ({number(delta, signed=True)})"
            cells.append(Entry(number(value), note, bold=value is not None and value == best))
            if judged:
                cells.append(Entry(number(model_row.value("reranked", JUDGED) if model_row else None)))
        cells.append(Entry(str(row.queries)))
        cells += [Entry(first.reference_check(row, measure)) for measure in checked]
        rows.append(cells)
    return ResultTable(title, columns, rows, first.caption(one_model=False), _averages_from(first))
