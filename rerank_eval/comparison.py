"""Comparing saved results: per-row values, paired significance tests, and every rendering.

Only saved per-query values are read (`per_query.csv`); no model or metric runs here. For each row
and each run other than the baseline: the delta, a paired two-sided test over per-query values
(t-test, or a randomization test with a fixed seed), Holm–Bonferroni-adjusted across the compared
runs, and win/tie/loss query counts. CQADupStack's row tests over all forum queries pooled; suite
averages test over per-row values and carry a bootstrap 95% interval of the mean difference.
Published figures (results/published) can be shown beside runs: marked, never tested.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table
from rich.text import Text

from rerank_eval.errors import UserError
from rerank_eval.results import SavedResult

PUBLISHED_DIR = Path(__file__).with_name("published")
ALPHA = 0.05
# LaTeX: every special character escaped; the table's own bold markers (control characters no
# label contains) become \textbf; symbols of the captions become their LaTeX forms.
BOLD_OPEN, BOLD_CLOSE = "\x01", "\x02"
LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"$<$", ">": r"$>$", "†": r"$^\dagger$", "Δ": r"$\Delta$", "–": "--", "—": "---", "±": r"$\pm$",
    BOLD_OPEN: r"\textbf{", BOLD_CLOSE: "}",
}  # fmt: skip
SEED = 20261126
RESAMPLES = 10_000


# -- statistics ------------------------------------------------------------------------------------


def latex_escape(text: str) -> str:
    return "".join(LATEX.get(character, character) for character in text)


def check_plot_path(path: Path) -> None:
    """matplotlib picks the image format from the file name; check it before any work."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if Path(path).suffix.lstrip(".").lower() not in formats:
        raise UserError(f"--plot {path}: the file name must end in one of .{', .'.join(sorted(formats))}")


def paired_p_value(run: np.ndarray, baseline: np.ndarray, test: str) -> float:
    """Two-sided p-value of a paired test; 1.0 when every difference is zero."""
    from scipy import stats

    differences = run - baseline
    if len(differences) < 2 or not np.any(differences):
        return 1.0
    if test == "t-test":
        p = stats.ttest_rel(run, baseline).pvalue
    else:
        p = stats.permutation_test(
            (run, baseline),
            lambda a, b, axis: np.mean(a - b, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=RESAMPLES,
            alternative="two-sided",
            random_state=SEED,
        ).pvalue
    return 1.0 if np.isnan(p) else float(p)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in input order."""
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def bootstrap_interval(differences: np.ndarray) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean difference (fixed seed)."""
    from scipy import stats

    if len(differences) < 2 or not np.any(differences - differences[0]):
        return None
    result = stats.bootstrap(
        (differences,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES,
        method="percentile", random_state=SEED,
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# -- inputs ------------------------------------------------------------------------------------------


@dataclass
class RunColumn:
    label: str
    folder: str
    manifest: dict[str, Any]
    values: dict[str, pd.Series]  # dataset key -> per-query values (index: query id)
    groups: dict[str, str]  # dataset key -> row name


@dataclass
class PublishedColumn:
    label: str
    source: str
    first_stage: str
    rows: dict[str, float]
    averages: dict[str, float]
    #: the first_stages entry that reproduces its candidates (e.g. jina-embeddings-v3), when known
    first_stage_name: str | None = None


def published_names() -> list[str]:
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.json"))


def load_published(name: str, metric: str) -> PublishedColumn:
    path = PUBLISHED_DIR / f"{name}.json"
    if not path.exists():
        raise UserError(f"no published results named {name!r}; known: {', '.join(published_names())}")
    data = json.loads(path.read_text(encoding="utf-8"))
    return PublishedColumn(
        label=f"{data['name']} (published)",
        source=data["source"],
        first_stage=data["first_stage"],
        rows=dict(data["rows"].get(metric, {})),
        averages=dict(data["averages"].get(metric, {})),
        first_stage_name=data.get("first_stage_name"),
    )


def _run_column(saved: SavedResult, metric: str) -> RunColumn:
    frame = saved.per_query
    selected = frame[(frame.stage == "reranked") & (frame.measure == metric)]
    if selected.empty:
        raise UserError(f"{saved.folder} has no per-query values for {metric}")
    values = {
        dataset: group.set_index("query_id")["value"].astype(float)
        for dataset, group in selected.groupby("dataset", sort=False)
    }
    groups = {d["key"]: d.get("row") or d["key"] for d in saved.manifest["datasets"]}
    return RunColumn(saved.manifest["model"]["name"], saved.folder.name, saved.manifest, values, groups)


def _labelled(columns: list[RunColumn]) -> list[RunColumn]:
    """Model names as labels; folder names where two runs share a model name."""
    labels = [c.label for c in columns]
    for column in columns:
        if labels.count(column.label) > 1:
            column.label = column.folder
    return columns


# -- the fair-comparison guard ---------------------------------------------------------------------


def _first_stage_identity(record: dict[str, Any]) -> tuple:
    stage = record["first_stage"]
    return stage["kind"], stage.get("sha256"), json.dumps(stage.get("settings"), sort_keys=True)


def protocol_differences(baseline: RunColumn, other: RunColumn) -> list[str]:
    """Reasons two runs are not a fair comparison (empty when they are)."""
    reasons = []
    a, b = baseline.manifest, other.manifest
    if a["protocol"]["top_k"] != b["protocol"]["top_k"]:
        reasons.append(
            f"top-k differs ({baseline.label}: {a['protocol']['top_k']}, "
            f"{other.label}: {b['protocol']['top_k']})"
        )
    order_a, order_b = a["protocol"]["candidate_order"], b["protocol"]["candidate_order"]
    if order_a != order_b:  # causal listwise models score a different prompt
        reasons.append(f"candidate order differs ({baseline.label}: {order_a}, {other.label}: {order_b})")
    theirs = {d["key"]: d for d in b["datasets"]}
    for mine in a["datasets"]:
        key = mine["key"]
        if key not in theirs:
            continue
        for what, get in (
            ("dataset version", lambda d: d["ir_datasets_id"]),
            ("first stage", _first_stage_identity),
            ("self-match policy", lambda d: d["drop_self_matches"]),
        ):
            if get(mine) != get(theirs[key]):
                reasons.append(f"{what} of {key} differs between {baseline.label} and {other.label}")
        if key in baseline.values and key in other.values:
            unmatched = set(baseline.values[key].index) ^ set(other.values[key].index)
            if unmatched:  # every judged query has a value, so the judgements themselves differ
                reasons.append(
                    f"query sets of {key} differ between {baseline.label} and {other.label} "
                    f"({len(unmatched)} queries in only one of them)"
                )
    return reasons


# -- the comparison ------------------------------------------------------------------------------------


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
        if test not in ("t-test", "randomization"):
            raise UserError(f"unknown test {test!r}; use t-test or randomization")
        self.metric, self.test = metric, test
        self.runs = _labelled([_run_column(saved, metric) for saved in results])
        self.baseline = self._pick_baseline(baseline)
        self.published = [load_published(name, metric) for name in published or []]
        self.warnings: list[str] = []
        self.footnotes: list[str] = []
        reasons = [
            r
            for run in self.runs
            if run is not self.baseline
            for r in protocol_differences(self.baseline, run)
        ]
        if reasons and not force:
            raise UserError(f"not a fair comparison: {reasons[0]} (use --force to compare anyway)")
        self.warnings += [f"compared anyway (--force): {r}" for r in reasons]
        self.rows = self._dataset_rows()
        self.rows += self._average_rows()
        self._check_published_first_stages()

    def run_first_stages(self) -> list[str]:
        """The first stages of the compared runs (labels, sorted), named in the title."""
        return sorted({d["first_stage"]["label"] for run in self.runs for d in run.manifest["datasets"]})

    def _check_published_first_stages(self) -> None:
        """Published figures set beside runs on other candidates are said to be so, in words."""
        names = {d["first_stage"].get("name") for run in self.runs for d in run.manifest["datasets"]}
        for column in self.published:
            if column.first_stage_name is None:
                continue
            if names == {column.first_stage_name}:
                self.footnotes.append(
                    f"{column.label} and the runs share the first stage {column.first_stage_name}"
                )
            else:
                self.warnings.append(
                    f"{column.label} reranked {column.first_stage_name}'s candidates; the runs did not "
                    f"(rerun with --first-stage {column.first_stage_name} to compare on the same candidates)"
                )

    def _pick_baseline(self, name: str | None) -> RunColumn:
        if name is None:
            return self.runs[0]
        for run in self.runs:
            if name in (run.label, run.folder):
                return run
        raise UserError(
            f"--baseline {name!r} is none of the compared runs ({', '.join(r.label for r in self.runs)})"
        )

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs] + [p.label for p in self.published]

    # -- rows --

    def _row_order(self) -> list[tuple[str, list[str]]]:
        """(row name, member dataset keys) over every run, in first-seen order."""
        rows: dict[str, list[str]] = {}
        for run in self.runs:
            for record in run.manifest["datasets"]:
                members = rows.setdefault(run.groups[record["key"]], [])
                if record["key"] not in members:
                    members.append(record["key"])
        return list(rows.items())

    def _pooled(self, run: RunColumn, members: list[str]) -> pd.Series | None:
        """Per-query values of a row's members, keyed (dataset, query); None if any member is missing."""
        if not all(m in run.values for m in members):
            return None
        return pd.concat({m: run.values[m] for m in members})

    def _dataset_rows(self) -> list[Row]:
        rows = []
        for name, members in self._row_order():
            pooled = {run.label: self._pooled(run, members) for run in self.runs}
            cells = {}
            for run in self.runs:
                series = pooled[run.label]
                value = None if series is None else float(np.mean([series[m].mean() for m in members]))
                cells[run.label] = Cell(value)
            self._test_row(cells, pooled)
            for column in self.published:
                cells[column.label] = Cell(column.rows.get(name))
            missing = [r.label for r in self.runs if cells[r.label].value is None]
            if missing:
                self.footnotes.append(f"{name}: not in {', '.join(missing)}")
            rows.append(
                Row(name, "group" if len(members) > 1 or members[0] != name else "dataset", cells, members)
            )
        return rows

    def _test_row(self, cells: dict[str, Cell], pooled: dict[str, pd.Series | None]) -> None:
        base = pooled[self.baseline.label]
        tested = []
        for run in self.runs:
            series = pooled[run.label]
            if run is self.baseline or series is None or base is None:
                continue
            common = series.index.intersection(base.index)
            run_values, base_values = series[common].to_numpy(), base[common].to_numpy()
            differences = run_values - base_values
            cell = cells[run.label]
            cell.delta = cell.value - cells[self.baseline.label].value
            cell.p_value = paired_p_value(run_values, base_values, self.test)
            cell.wins = int((differences > 0).sum())
            cell.ties = int((differences == 0).sum())
            cell.losses = int((differences < 0).sum())
            tested.append(cell)
        for cell, adjusted in zip(tested, holm([c.p_value for c in tested])):
            cell.p_adjusted = adjusted

    def _average_rows(self) -> list[Row]:
        suite = self.baseline.manifest["suite"]
        in_average = {
            self.baseline.groups[d["key"]] for d in self.baseline.manifest["datasets"] if d["in_average"]
        }
        names = [row.name for row in self.rows]
        headline = [n for n in names if n in in_average]
        averages = []  # an average of one row would repeat it
        if len(headline) > 1:
            expected = list(suite.get("average_rows") or [])
            label = published_key = suite["average_label"]
            if sorted(headline) != sorted(expected):
                label, published_key = f"{label} subset ({len(headline)} of {len(expected)})", None
            averages.append(self._average(label, headline, published_key))
        if len(headline) < len(names) and len(names) > 1:
            averages.append(self._average(f"Average, all {len(names)} rows", names, None))
        return averages

    def _average(self, label: str, names: list[str], published_key: str | None) -> Row:
        by_name = {row.name: row for row in self.rows}
        cells = {}
        for column in self.labels:
            values = {n: by_name[n].cells[column].value for n in names}
            present = {n: v for n, v in values.items() if v is not None}
            cells[column] = Cell(float(np.mean(list(present.values()))) if present else None)
            if present and len(present) < len(names) and column in {r.label for r in self.runs}:
                self.footnotes.append(f"{label}: {column} averages {len(present)} of {len(names)} rows")
        for column in self.published:
            if column.rows.keys() >= set(names):
                self.footnotes.append(f"{label}: {column.label} is the mean of its published rows")
            else:
                cells[column.label] = Cell(column.averages.get(published_key) if published_key else None)
        self._test_average(cells, names, by_name)
        return Row(label, "average", cells, names)

    def _test_average(self, cells: dict[str, Cell], names: list[str], by_name: dict[str, Row]) -> None:
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
            run_values, base_values = np.array(pairs).T if pairs else (np.array([]), np.array([]))
            cell = cells[run.label]
            # over the rows both have, like the test and the interval (a run may lack some rows)
            cell.delta = float(np.mean(run_values - base_values)) if pairs else None
            cell.p_value = paired_p_value(run_values, base_values, self.test)
            cell.interval = bootstrap_interval(run_values - base_values)
            differences = run_values - base_values
            cell.wins, cell.ties, cell.losses = (
                int((differences > 0).sum()),
                int((differences == 0).sum()),
                int((differences < 0).sum()),
            )
            tested.append(cell)
        for cell, adjusted in zip(tested, holm([c.p_value for c in tested])):
            cell.p_adjusted = adjusted

    # -- renderings --

    def caption(self) -> str:
        protocol = self.baseline.manifest["protocol"]
        test = (
            "paired two-sided t-test"
            if self.test == "t-test"
            else (f"paired two-sided randomization test ({RESAMPLES:,} resamples, seed {SEED})")
        )
        lines = [
            f"{self.metric}, reranked. Δ vs {self.baseline.label}; † = p < {ALPHA} ({test} over per-query "
            f"values, Holm–Bonferroni-adjusted across the {len(self.runs) - 1} compared runs); "
            f"W/T/L = queries won/tied/lost vs the baseline.",
        ]
        groups = [row.name for row in self.rows if row.kind == "group"]
        if groups:
            lines.append(f"{', '.join(groups)}: queries of all members pooled for the test and W/T/L.")
        if any(row.kind == "average" for row in self.rows):
            lines.append(
                f"Averages: Δ, test and bootstrap 95% interval (seed {SEED}) over the per-row values of "
                "the rows both runs have."
            )
        lines.append(f"Top-{protocol['top_k']} candidates in {protocol['candidate_order']} order.")
        for column in self.published:
            lines.append(f"{column.label}: {column.source}; first stage: {column.first_stage}; not tested.")
        lines += [f"Note: {f}." for f in self.footnotes]
        lines += [f"WARNING: {w}." for w in self.warnings]
        return "\n".join(lines)

    def best(self, row: Row) -> float | None:
        values = [c.value for c in row.cells.values() if c.value is not None]
        return max(values) if values else None

    def table(self) -> Table:
        # labels and names come from users' results: Text, never markup
        title = f"Comparison: {self.metric}; first stage: {'; '.join(self.run_first_stages())}"
        table = Table(title=Text(title), caption=Text(self.caption()))
        name, *columns = self._header()
        table.add_column(name, no_wrap=True)
        for column in columns:
            table.add_column(Text(column.replace(", first stage:", "\nfirst stage:")), justify="right")
        for row in self.rows:
            if row is self._first_average():
                table.add_section()
            table.add_row(Text(row.name), *self._cells(row, bold=lambda t: f"[bold]{t}[/bold]"))
        return table

    @staticmethod
    def _value_text(cell: Cell, best: float | None, plain: bool, bold: Callable[[str], str]) -> str:
        """The value, bold when best; for a compared run also Δ, the significance mark, the interval."""
        if cell.value is None:
            return "–"
        text = f"{cell.value:.4f}"
        if best is not None and cell.value == best:
            text = bold(text)
        if not plain and cell.delta is not None:
            text += f" ({cell.delta:+.4f}{'†' if cell.significant else ''})"
            if cell.interval:
                text += f" [{cell.interval[0]:+.4f}, {cell.interval[1]:+.4f}]"
        return text

    def _header(self) -> list[str]:
        """Column names shared by every rendering: runs, W/T/L after each compared run, published."""
        names = ["Dataset"]
        for run in self.runs:
            names.append(run.label + (" (baseline)" if run is self.baseline else ""))
            if run is not self.baseline:
                names.append("W/T/L")
        names += [f"{column.label}, first stage: {column.first_stage}" for column in self.published]
        return names

    def _cells(self, row: Row, bold: Callable[[str], str]) -> list[str]:
        best = self.best(row)
        cells = []
        for run in self.runs:
            cell = row.cells[run.label]
            cells.append(self._value_text(cell, best, run is self.baseline, bold))
            if run is not self.baseline:
                cells.append("" if cell.wins is None else f"{cell.wins}/{cell.ties}/{cell.losses}")
        cells += [self._value_text(row.cells[c.label], best, True, bold) for c in self.published]
        return cells

    def _first_average(self) -> Row | None:
        return next((r for r in self.rows if r.kind == "average"), None)

    def long_frame(self) -> pd.DataFrame:
        records = []
        for row in self.rows:
            for label, cell in row.cells.items():
                record = {"dataset": row.name, "kind": row.kind, "run": label, **asdict(cell)}
                interval = record.pop("interval")
                record["ci_low"], record["ci_high"] = interval if interval else (None, None)
                record["baseline"] = label == self.baseline.label
                record["published"] = label in {p.label for p in self.published}
                record["significant"] = cell.significant
                records.append(record)
        return pd.DataFrame.from_records(records)

    def wide_frame(self) -> pd.DataFrame:
        return (
            self.long_frame()
            .pivot(index="dataset", columns="run", values="value")
            .reindex([row.name for row in self.rows])[self.labels]
        )

    def to_csv(self, wide: bool = False) -> str:
        buffer = io.StringIO()
        (self.wide_frame() if wide else self.long_frame()).to_csv(buffer, index=wide, float_format="%.10g")
        return buffer.getvalue()

    def to_markdown(self) -> str:
        header = self._header()
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for row in self.rows:
            lines.append("| " + " | ".join([row.name, *self._cells(row, bold=lambda t: f"**{t}**")]) + " |")
        return "\n".join(lines) + "\n\n" + self.caption().replace("\n", "  \n") + "\n"

    def to_latex(self) -> str:
        """A booktabs table float with the whole caption (test, correction, notes, warnings)."""
        header = self._header()
        lines = [
            r"% needs \usepackage{booktabs}",
            r"\begin{table}[t]",
            r"\centering",
            r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(map(latex_escape, header)) + r" \\",
            r"\midrule",
        ]
        for row in self.rows:
            if row is self._first_average():
                lines.append(r"\midrule")
            cells = self._cells(row, bold=lambda t: f"{BOLD_OPEN}{t}{BOLD_CLOSE}")
            cells = [latex_escape(text) for text in [row.name, *cells]]
            lines.append(" & ".join(cells) + r" \\")
        caption = r" \\ ".join(latex_escape(line) for line in self.caption().splitlines())
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        payload = {
            "metric": self.metric,
            "test": self.test,
            "baseline": self.baseline.label,
            "runs": [{"label": r.label, "folder": r.folder} for r in self.runs],
            "published": [asdict(p) for p in self.published],
            "rows": [
                {
                    "dataset": row.name,
                    "kind": row.kind,
                    "members": row.members,
                    "cells": {label: asdict(cell) for label, cell in row.cells.items()},
                }
                for row in self.rows
            ],
            "notes": self.footnotes,
            "warnings": self.warnings,
        }
        return json.dumps(payload, indent=2) + "\n"

    def plot(self, path: Path) -> None:
        """Grouped bars per row, one bar per run; the baseline hatched and named in the legend."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        check_plot_path(path)
        rows = self.rows
        width = 0.8 / max(1, len(self.labels))
        figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(rows) + 2), 5), dpi=100)
        positions = np.arange(len(rows))
        for index, label in enumerate(self.labels):
            values = [row.cells[label].value or 0.0 for row in rows]
            is_baseline = label == self.baseline.label
            axes.bar(
                positions + index * width, values, width,
                label=f"{label} (baseline)" if is_baseline else label,
                hatch="//" if is_baseline else None, edgecolor="black" if is_baseline else None,
            )  # fmt: skip
        axes.set_xticks(positions + width * (len(self.labels) - 1) / 2)
        axes.set_xticklabels([row.name for row in rows], rotation=45, ha="right")
        axes.set_ylabel(self.metric)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)
