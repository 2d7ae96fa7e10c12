"""The neutral bar chart the plot draws, as `table.py`'s table is the one the text formats lay out.

A comparison describes itself once as grouped bars (a series per run) with each bar's mark and
error bar already decided, so that drawing needs no statistics and the figure says what the
table says.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    value: float | None  # None: no bar (a row the run lacks)
    error: tuple[float, float] | None = None  # how far the error bar reaches below and above value
    mark: str = ""  # drawn above the bar: "▲" or "▼" where significantly above or below the baseline


@dataclass(frozen=True)
class Series:
    label: str  # as the legend names it: "bm25 (baseline)"
    bars: list[Bar]  # one per group
    baseline: bool = False


@dataclass(frozen=True)
class BarChart:
    groups: list[str]  # the rows: datasets, groups, averages
    series: list[Series]
    axis: str  # the value axis's label: the metric
    caption: str  # what the figure needs said under it: metric, first stage, top-k, marks, bars
