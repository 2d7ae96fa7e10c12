"""The report of one result: every aggregate derived from saved per-query values, and its renderings.

Nothing here runs a model or a metric: dataset means, CQADupStack's mean of forums, suite averages
and deltas all come from `per_query.csv`, so a re-rendered table (`rerank-eval export`) is
identical to the one printed at the end of the run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from rich.table import Table
from rich.text import Text

# Pyserini calls a reproduction of its published BM25 figure "OK" within this distance.
REFERENCE_TOLERANCE = 5e-4
JUDGED = "Judged@10"


@dataclass
class ReportRow:
    name: str
    kind: str  # "dataset", "group" or "average"
    values: dict[tuple[str, str], float]  # (stage, measure) -> mean
    queries: int
    seconds: float
    reference: float | None = None
    members: list[str] = field(default_factory=list)
    in_average: bool = False

    def value(self, stage: str, measure: str) -> float | None:
        return self.values.get((stage, measure))


def _mean_values(rows: list[ReportRow]) -> dict[tuple[str, str], float]:
    keys = set.intersection(*(set(r.values) for r in rows)) if rows else set()
    return {key: sum(r.values[key] for r in rows) / len(rows) for key in keys}


class Report:
    """Rows of a result table (datasets, groups, averages) and their terminal and CSV forms."""

    def __init__(self, manifest: dict[str, Any], per_query: pd.DataFrame) -> None:
        self.manifest = manifest
        self.metrics: list[str] = list(manifest["protocol"]["metrics"])
        self.recall = f"R@{manifest['protocol']['top_k']}"
        self.rows = self._dataset_and_group_rows(per_query)
        self.averages = self._average_rows()

    # -- aggregation ------------------------------------------------------------------------------

    def _dataset_rows(self, per_query: pd.DataFrame) -> list[ReportRow]:
        means = per_query.groupby(["dataset", "stage", "measure"])["value"].mean()
        counts = per_query.groupby(["dataset", "stage", "measure"])["value"].size()
        rows = []
        for record in self.manifest["datasets"]:
            key = record["key"]
            values = {(s, m): float(v) for (d, s, m), v in means.items() if d == key}
            rows.append(
                ReportRow(
                    name=key,
                    kind="dataset",
                    values=values,
                    queries=int(counts.get((key, "reranked", self.metrics[0]), 0)),
                    seconds=float(record["timings"]["rerank_seconds"]),
                    reference=record["first_stage"].get("reference_ndcg10"),
                    in_average=bool(record["in_average"]),
                )
            )
        return rows

    def _dataset_and_group_rows(self, per_query: pd.DataFrame) -> list[ReportRow]:
        """Dataset rows in suite order, a group's members folded into one row at its first place."""
        datasets = self._dataset_rows(per_query)
        group_of = {r["key"]: r.get("row") or r["key"] for r in self.manifest["datasets"]}
        rows: list[ReportRow] = []
        seen: set[str] = set()
        for row in datasets:
            group = group_of[row.name]
            if group == row.name:
                rows.append(row)
            elif group not in seen:
                seen.add(group)
                members = [r for r in datasets if group_of[r.name] == group]
                references = [m.reference for m in members]
                rows.append(
                    ReportRow(
                        name=group,
                        kind="group",
                        values=_mean_values(members),
                        queries=sum(m.queries for m in members),
                        seconds=sum(m.seconds for m in members),
                        reference=(sum(references) / len(references) if None not in references else None),
                        members=[m.name for m in members],
                        in_average=any(m.in_average for m in members),
                    )
                )
        return rows

    def _average_rows(self) -> list[ReportRow]:
        """The suite's headline average and the all-rows one; an average of one row would repeat it."""
        suite = self.manifest["suite"]
        headline = [r for r in self.rows if r.in_average]
        averages = []
        if len(headline) > 1:
            expected = list(suite.get("average_rows") or [])
            label = suite["average_label"]
            if sorted(r.name for r in headline) != sorted(expected):
                label = f"{label} subset ({len(headline)} of {len(expected)})"
            averages.append(self._average(label, headline))
        if len(headline) < len(self.rows) and len(self.rows) > 1:
            averages.append(self._average(f"Average, all {len(self.rows)} rows", self.rows))
        return averages

    @staticmethod
    def _average(label: str, rows: list[ReportRow]) -> ReportRow:
        return ReportRow(
            name=label,
            kind="average",
            values=_mean_values(rows),
            queries=sum(r.queries for r in rows),
            seconds=sum(r.seconds for r in rows),
            members=[r.name for r in rows],
        )

    # -- renderings -------------------------------------------------------------------------------

    def reference_check(self, row: ReportRow) -> str:
        """'OK' when the first stage reproduces its published nDCG@10, else the difference."""
        value = row.value("first_stage", "nDCG@10")
        if row.reference is None or value is None:
            return ""
        difference = value - row.reference
        return "OK" if abs(difference) <= REFERENCE_TOLERANCE else f"{difference:+.4f}"

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

    def summary_csv(self) -> str:
        buffer = io.StringIO()
        self.summary_frame().to_csv(buffer, index=False, float_format="%.10f")
        return buffer.getvalue()

    def table(self) -> Table:
        model = self.manifest["model"]
        labels = sorted({r["first_stage"]["label"] for r in self.manifest["datasets"]})
        table = Table(  # names come from users' configs and paths: Text, never markup
            title=Text(f"{model['name']} on {self.manifest['suite']['name']} (top-{self.recall[2:]})"),
            caption=Text(self.caption(labels)),
        )
        table.add_column("Dataset", no_wrap=True)
        for metric in self.metrics:
            table.add_column(f"{metric}\nfirst stage", justify="right")
            table.add_column(f"{metric}\nreranked", justify="right")
            table.add_column("Δ", justify="right")
        table.add_column(f"{JUDGED}\nreranked", justify="right")
        table.add_column(f"{self.recall}\nfirst stage", justify="right")
        table.add_column("Queries", justify="right")
        table.add_column("Seconds", justify="right")
        show_reference = any(r.reference is not None for r in self.rows)
        if show_reference:
            table.add_column("First stage\nvs published", justify="right")
        for row in self.rows + self.averages:
            if row.kind == "average" and row is self.averages[0]:
                table.add_section()
            cells: list[str | Text] = [Text(row.name)]
            for metric in self.metrics:
                first, reranked = row.value("first_stage", metric), row.value("reranked", metric)
                delta = None if first is None or reranked is None else reranked - first
                cells += [_fmt(first), _fmt(reranked), _fmt(delta, signed=True)]
            cells += [
                _fmt(row.value("reranked", JUDGED)),
                _fmt(row.value("first_stage", self.recall)),
                str(row.queries),
                f"{row.seconds:.1f}",
            ]
            if show_reference:
                cells.append(self.reference_check(row))
            table.add_row(*cells)
        return table

    def caption(self, first_stage_labels: list[str]) -> str:
        protocol = self.manifest["protocol"]
        lines = [
            f"First stage: {'; '.join(first_stage_labels)}; top-{protocol['top_k']} candidates in "
            f"{protocol['candidate_order']} order."
        ]
        for average in self.averages:
            lines.append(f"{average.name}: mean over {', '.join(average.members)}.")
        gaps = [
            f"{r['key']} ({r['coverage']['queries_without_run']} of {r['coverage']['judged_queries']})"
            for r in self.manifest["datasets"]
            if r["coverage"]["queries_without_run"]
        ]
        if gaps:
            lines.append("Judged queries without candidates score 0: " + ", ".join(gaps) + ".")
        if any(r.reference is not None for r in self.rows):
            names = sorted(
                {r["first_stage"].get("reference_name") or "" for r in self.manifest["datasets"]} - {""}
            )
            lines.append(
                f"First stage vs published: OK within ±{REFERENCE_TOLERANCE} of the published figure "
                f"({', '.join(names)}), else the difference."
            )
        return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def comparison_table(reports: list[Report]) -> Table:
    """One table for several models reranking the same candidates: a column per model.

    Rows are the first report's datasets, groups and averages; the best reranked value of each row
    is bold.
    """
    first = reports[0]
    metric = first.metrics[0]
    manifest = first.manifest
    title = f"{metric} on {manifest['suite']['name']} (top-{first.recall[2:]}), {len(reports)} models"
    table = Table(
        title=Text(title),
        caption=Text(first.caption(sorted({r["first_stage"]["label"] for r in manifest["datasets"]}))),
    )
    table.add_column("Dataset", no_wrap=True)
    table.add_column("First stage", justify="right")
    for report in reports:
        table.add_column(Text(report.manifest["model"]["name"]), justify="right")
    table.add_column("Queries", justify="right")
    by_name = [{row.name: row for row in r.rows + r.averages} for r in reports]
    for row in first.rows + first.averages:
        if row.kind == "average" and row is first.averages[0]:
            table.add_section()
        values = [rows[row.name].value("reranked", metric) if row.name in rows else None for rows in by_name]
        best = max((v for v in values if v is not None), default=None)
        cells = [_fmt(v) if v != best else f"[bold]{_fmt(v)}[/bold]" for v in values]
        table.add_row(Text(row.name), _fmt(row.value("first_stage", metric)), *cells, str(row.queries))
    return table
