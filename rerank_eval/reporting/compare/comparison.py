"""Comparing saved results: per-row values and paired significance tests against a baseline.

Only saved per-query values are read (`per_query.csv`); no model or metric runs here. For each row
and each run other than the baseline: the delta, a paired two-sided test over per-query values
(a registered test: t-test, or a randomization test with a fixed seed), Holm–Bonferroni-adjusted
across the compared runs, and win/tie/loss query counts. CQADupStack's row tests over all forum
queries pooled; suite averages test over per-row values and carry a bootstrap 95% interval of the
mean difference. Published figures (rerank_eval/published) can be shown beside runs: marked,
never tested. `Comparison` computes; `reporting/compare/table.py` and `reporting/render/` show it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rerank_eval.errors import ParameterError, UserError, term
from rerank_eval.reporting.compare.columns import RunColumn, labelled, run_column
from rerank_eval.reporting.compare.guard import protocol_differences
from rerank_eval.reporting.compare.published import (
    first_stage_note,
    is_packaged_headline,
    load_published,
    other_version,
    row_figure,
)
from rerank_eval.reporting.compare.stats import ALPHA, bootstrap_interval, holm, paired_p_value, paired_test
from rerank_eval.reporting.compare.suite_view import suite_view
from rerank_eval.reporting.layout import (
    AverageRow,
    average_rows,
    in_part,
    is_group,
    merged_row_members,
    missing_members,
    query_mean,
)
from rerank_eval.results.folder import SavedResult


@dataclass
class Cell:
    value: float | None
    delta: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    wins: int | None = None
    ties: int | None = None
    losses: int | None = None
    interval: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted < ALPHA


@dataclass
class Row:
    name: str
    kind: str  # "dataset", "group" or "average"
    cells: dict[str, Cell]  # run or published label -> cell
    members: list[str] = field(default_factory=list)
    #: the labels whose value on this (average) row covers only some of its rows, so it is not
    #: ranked against the others' (its Δ and test cover the rows it shares with the baseline)
    short: set[str] = field(default_factory=set)


class Comparison:
    """A table of runs (and published figures) over datasets, with tests against a baseline."""

    def __init__(
        self,
        results: list[SavedResult],
        metric: str = "nDCG@10",
        baseline: str | None = None,
        test: str = "t-test",
        published: list[str] | None = None,
        force: bool = False,
    ) -> None:
        self.metric, self.test = metric, paired_test(test).name
        self.published = [load_published(name, metric) for name in dict.fromkeys(published or [])]
        reserved = [column.label for column in self.published]
        self.runs = labelled([run_column(saved, metric) for saved in results], reserved)
        self.baseline = self._pick_baseline(baseline)
        self.warnings: list[str] = []
        self.footnotes: list[str] = []
        self.partial: set[str] = set()  # group rows holding only some of their members
        self.other_data: set[str] = set()  # rows not of the data published figures are of
        self.families: dict[str, int] = {}  # each row's runs tested against the baseline (Holm's family)
        self.paired_only: set[tuple[str, str]] = set()  # (row, run) whose Δ covers shared queries only
        reasons = [
            r
            for run in self.runs
            if run is not self.baseline
            for r in protocol_differences(self.baseline, run)
        ]
        if reasons and not force:
            raise UserError(
                f"not a fair comparison: {reasons[0]} (use {term('force')} to compare anyway)",
                {"force": "force=True"},
            )
        self.warnings += [f"compared anyway (--force): {r}" for r in reasons]
        self.suite = suite_view(self.runs, self.baseline)
        self._note_queries_without_candidates()
        self.rows = self._dataset_rows()
        self.rows += self._average_rows()
        self._check_published_first_stages()

    def run_first_stages(self) -> list[str]:
        """The first stages of the compared runs (labels, sorted), named in the title."""
        return sorted({label for run in self.runs for label in run.manifest.first_stage_labels()})

    def _check_published_first_stages(self) -> None:
        """Published figures set beside runs on other candidates are said to be so, in words."""
        records = [record for run in self.runs for record in run.manifest.datasets]
        depths = sorted({run.manifest.protocol.top_k for run in self.runs})
        for column in self.published:
            shared, note = first_stage_note(column, records, depths)
            if note:
                (self.footnotes if shared else self.warnings).append(note)

    def _note_queries_without_candidates(self) -> None:
        """Judged queries a run's first stage gave no candidates for score 0 in its values, its Δ and
        its test: said here as the run's own table says it."""
        runs_by_gap: dict[tuple[str, int, int], list[str]] = {}
        for run in self.runs:
            for record in run.manifest.datasets:
                coverage = record.coverage
                if coverage.queries_without_run:
                    gap = (record.key, coverage.queries_without_run, coverage.judged_queries)
                    runs_by_gap.setdefault(gap, []).append(run.label)
        for (key, missing, judged), labels in runs_by_gap.items():
            who = labels[0] if len(labels) == 1 else f"{', '.join(labels)} each"
            self.footnotes.append(
                f"{key}: {who} had no candidates for {missing} of its {judged} judged queries, which score 0"
            )

    def _pick_baseline(self, name: str | None) -> RunColumn:
        if name is None:
            return self.runs[0]
        labels = ", ".join(r.label for r in self.runs)
        by_label = [run for run in self.runs if run.label == name]
        matches = by_label or [run for run in self.runs if name == run.folder]
        if len(matches) > 1:
            raise ParameterError(
                "baseline", f"{name!r} names {len(matches)} of the compared runs; give one of {labels}"
            )
        if not matches:
            raise ParameterError("baseline", f"{name!r} is none of the compared runs ({labels})")
        return matches[0]

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs] + [p.label for p in self.published]

    # -- rows --

    def _pooled(self, run: RunColumn, members: list[str]) -> pd.Series | None:
        """Per-query values of a row's members, keyed (dataset, query); None if any member is missing."""
        if not all(m in run.values for m in members):
            return None
        return pd.concat({m: run.values[m] for m in members})

    def _dataset_rows(self) -> list[Row]:
        rows = []
        runs = [run.manifest.datasets for run in self.runs]
        for name, members in merged_row_members(runs, self.suite.order):
            pooled = {run.label: self._pooled(run, members) for run in self.runs}
            cells = {}
            for run in self.runs:
                series = pooled[run.label]
                value = None if series is None else float(np.mean([query_mean(series[m]) for m in members]))
                cells[run.label] = Cell(value)
            self._test_row(name, cells, pooled)
            missing = missing_members(name, members, self.suite.groups)
            self._note_missing(name, members, cells)
            if missing:
                self.partial.add(name)
                self.footnotes.append(in_part(name, members, missing))
            self._published_cells(name, members, cells)
            rows.append(Row(name, "group" if is_group(name, members) else "dataset", cells, members))
        return rows

    def _published_cells(self, name: str, members: list[str], cells: dict[str, Cell]) -> None:
        """The published columns' cells of a row: none where the runs read its data otherwise than
        the packaged suites (the train split of scifact, local files), which no average over it
        shows either."""
        ids: dict[str, set[str | None]] = {member: set() for member in members}
        for record in (record for run in self.runs for record in run.manifest.datasets):
            if record.key in ids:
                ids[record.key].add(record.ir_datasets_id)
        other = other_version(members, ids) if self.published else None
        if other:
            self.other_data.add(name)
            self.footnotes.append(
                f"{name}: the runs read it as {other}, not the data published figures are of; none shown"
            )
        for column in self.published:
            value, note = (None, None) if other else row_figure(column, name, members)
            cells[column.label] = Cell(value)
            self.footnotes += [note] if note else []

    def _note_missing(self, name: str, members: list[str], cells: dict[str, Cell]) -> None:
        """Which runs have no value in a row: those without it, and, for a group (CQADupStack),
        those holding only some of its members, whose mean would be another row's."""
        absent, partial = [], []
        for run in self.runs:
            if cells[run.label].value is None:
                held = sum(member in run.values for member in members)
                if held:  # of the group's members in the suite where known, else of the row's
                    partial.append(f"{run.label} ({held} of {len(self.suite.groups.get(name) or members)})")
                else:
                    absent.append(run.label)
        if absent:
            self.footnotes.append(f"{name}: not in {', '.join(absent)}")
        if partial:
            self.footnotes.append(
                f"{name}: only some of its members in {', '.join(partial)}, so no value there"
            )

    def _test_row(self, row: str, cells: dict[str, Cell], pooled: dict[str, pd.Series | None]) -> None:
        base = pooled[self.baseline.label]
        tested = []
        for run in self.runs:
            series = pooled[run.label]
            if run is self.baseline or series is None or base is None:
                continue
            # paired in one stated order (member, then query id, as strings sort), whatever order
            # each folder lists its queries in: the randomization test's p depends on the order
            common = series.index.intersection(base.index).sort_values()
            if common.empty:  # (other query sets, compared with --force)
                self._not_compared(row, run.label, "query")
                continue
            run_values, base_values = series[common].to_numpy(), base[common].to_numpy()
            differences = run_values - base_values
            cell = cells[run.label]
            if len(common) == len(series) == len(base):
                cell.delta = cell.value - cells[self.baseline.label].value
            else:  # (other query sets, compared with --force) over the queries paired, as the test
                cell.delta = _paired_delta(pd.Series(differences, index=common))
                self.paired_only.add((row, run.label))
                self.footnotes.append(
                    f"{row}: {run.label}'s Δ, test and W/T/L cover the {len(common)} queries it shares "
                    f"with the baseline"
                )
            cell.p_value = self._p_value(run_values, base_values, run.label, row)
            _count_outcomes(cell, differences)
            tested.append(cell)
        self._adjust(row, tested)

    def _not_compared(self, row: str, label: str, unit: str) -> None:
        """Nothing to pair: the run is shown, not compared (nor counted in the row's Holm family)."""
        self.footnotes.append(
            f"{row}: {label} has no {unit} in common with the baseline {self.baseline.label}: "
            f"shown, not compared"
        )

    def _p_value(self, run_values: np.ndarray, base_values: np.ndarray, label: str, row: str) -> float | None:
        p = paired_p_value(run_values, base_values, self.test)
        if p is None:
            what = (
                f"{label} has a single value to pair with the baseline's"
                if len(run_values) == 1
                else f"{label}'s differences from the baseline are all one value"
            )
            self.footnotes.append(f"{row}: {what}, for which the {self.test} is undefined (no p-value, no †)")
        return p

    def _adjust(self, row: str, tested: list[Cell]) -> None:
        """Holm–Bonferroni across the row's compared runs. A run whose test is undefined still counts
        in the family, as p = 1 (it was compared, so the caption's count holds and the others are
        adjusted no less), and keeps no p-value of its own."""
        self.families[row] = len(tested)
        adjusted = holm([1.0 if cell.p_value is None else cell.p_value for cell in tested])
        for cell, value in zip(tested, adjusted, strict=True):
            cell.p_adjusted = None if cell.p_value is None else value

    def _average_rows(self) -> list[Row]:
        names = [row.name for row in self.rows]
        averages = average_rows(
            names, self.suite.in_average, self.baseline.manifest.suite, frozenset(self.partial)
        )
        return [
            self._average(average.label, average.names, average.label if self._published(average) else None)
            for average in averages
        ]

    @staticmethod
    def _published(average: AverageRow) -> bool:
        """Whether published averages of this row's name are its figure: the whole headline of a
        packaged suite of that label, every row present."""
        return average.complete and is_packaged_headline(average.label, average.names)

    def _average(self, label: str, names: list[str], published_key: str | None) -> Row:
        by_name = {row.name: row for row in self.rows}
        cells, short = {}, set()
        for column in self.labels:
            values = {n: by_name[n].cells[column].value for n in names}
            present = {n: v for n, v in values.items() if v is not None}
            cells[column] = Cell(float(np.mean(list(present.values()))) if present else None)
            if present and len(present) < len(names):
                short.add(column)
                if column in {r.label for r in self.runs}:
                    self.footnotes.append(
                        f"{label}: {column} averages {len(present)} of {len(names)} rows (not marked best)"
                    )
        if self.other_data & set(names):
            published_key = None  # the published average is of other data than some of these rows
        for column in self.published:
            if all(by_name[n].cells[column.label].value is not None for n in names):
                self.footnotes.append(f"{label}: {column.label} is the mean of its published rows")
            else:
                cells[column.label] = Cell(column.averages.get(published_key) if published_key else None)
        self._test_average(label, cells, names, by_name)
        return Row(label, "average", cells, names, short={c for c in short if cells[c].value is not None})

    def _test_average(
        self, row: str, cells: dict[str, Cell], names: list[str], by_name: dict[str, Row]
    ) -> None:
        base = self.baseline.label
        tested = []
        for run in self.runs:
            if run is self.baseline or cells[run.label].value is None or cells[base].value is None:
                continue
            pairs = [
                (by_name[n].cells[run.label].value, by_name[n].cells[base].value)
                for n in names
                if by_name[n].cells[run.label].value is not None and by_name[n].cells[base].value is not None
            ]
            if not pairs:
                self._not_compared(row, run.label, "row")
                continue
            run_values, base_values = np.array(pairs).T
            cell, differences = cells[run.label], run_values - base_values
            if any((name, run.label) in self.paired_only for name in names):
                self.footnotes.append(
                    f"{row}: {run.label}'s Δ and test take each row's value over its own queries, not "
                    f"the rows' paired Δs"
                )
            # over the rows both have, like the test and the interval (a run may lack some rows)
            cell.delta = float(np.mean(differences))
            cell.p_value = self._p_value(run_values, base_values, run.label, row)
            cell.interval = bootstrap_interval(differences)
            _count_outcomes(cell, differences)
            tested.append(cell)
        self._adjust(row, tested)


def _paired_delta(differences: pd.Series) -> float:
    """A row's Δ from paired per-query differences keyed (member, query): the mean of its members'
    mean differences, as the row's value is the mean of its members' means."""
    members = differences.index.get_level_values(0)
    return float(np.mean([query_mean(differences[members == m]) for m in dict.fromkeys(members)]))


def _count_outcomes(cell: Cell, differences: np.ndarray) -> None:
    """W/T/L: the paired values (queries, or an average's rows) won, tied and lost."""
    cell.wins = int((differences > 0).sum())
    cell.ties = int((differences == 0).sum())
    cell.losses = int((differences < 0).sum())
