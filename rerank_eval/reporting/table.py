"""The neutral table every text rendering consumes (terminal, Markdown, LaTeX, HTML).

A report or a comparison computes its numbers, then describes itself once as a `ResultTable`:
column names, cells already formatted, the caption's lines. Renderers only lay that out, so a new
format is one module of `reporting/render/` and every format shows the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str  # one line
    terminal: str | None = None  # the terminal header where it wraps otherwise ("…\nfirst stage")
    numeric: bool = True  # right-aligned; the first, naming column is not
    # a name users type (a run's label) that the header starts with: never cut; where a narrow
    # terminal has no room for it, the header becomes a key to a line that names it whole
    label: str = ""
    follows: bool = False  # belongs beside the column before it (W/T/L beside its run), never split off


@dataclass(frozen=True)
class Entry:
    value: str  # "0.7000", "–", "OK", a row's name
    note: str = ""  # follows the value and is never bold: " (+0.0100†) [-0.01, +0.03]"
    bold: bool = False  # the best value of its row

    @property
    def text(self) -> str:
        return self.value + self.note


@dataclass
class ResultTable:
    title: str
    columns: list[Column]
    rows: list[list[Entry]]
    caption: list[str] = field(default_factory=list)
    averages_from: int | None = None  # the first average row, which a rule separates


def number(value: float | None, signed: bool = False) -> str:
    """A figure as every table shows it: four decimals, an en dash when absent."""
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
