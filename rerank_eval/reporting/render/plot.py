"""A bar chart (`reporting/chart.py`) as a figure for a paper, in the format its file name says.

One column of a two-column paper wide (3.4 in) or the page's width (7 in), by its number of bars,
so that it is included at its size and its fonts stay a paper's sizes. The legend sits above the
axes, where it covers no bar; each bar carries its value, a mark where it differs significantly
from the baseline, and its error bar where the chart has one; the caption sits under the axes.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rerank_eval.errors import ParameterError
from rerank_eval.reporting.chart import BarChart, Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 300  # raster formats (PNG); vector ones (PDF, SVG) have none
COLUMN, PAGE = (3.4, 2.8), (7.0, 3.2)  # inches, width by height
MOST_BARS_IN_A_COLUMN = 12
FONT, VALUE_FONT, CAPTION_FONT = 7.0, 5.0, 6.5  # points
VALUE_RISE, MARK_RISE = 1.5, 17.5  # points above a bar's top (or its error bar's): its value, its mark
LABEL_ROOM = 26.0  # points the value and mark need above the highest bar
#: the label of a bar a run lacks (a row it has no value for), at its base
MISSING = "n/a"
#: the longest line of a row's name under its bars and of a run's in the legend: longer names are
#: wrapped, whole (a dataset key may take 128 characters, a run's label a folder path; written on
#: one line, a long one squeezed the axes to nothing)
TICK_CHARACTERS, LEGEND_CHARACTERS = 20, 40


#: the formats a figure is written in, and the metadata that keeps each free of the time it was
#: made (so the same comparison gives the same bytes; raster formats hold none); PostScript and
#: compressed SVG take the time from elsewhere (the environment, a gzip header): not offered
FORMATS: dict[str, dict[str, None]] = {
    "pdf": {"CreationDate": None},
    "svg": {"Date": None},
    **{raster: {} for raster in ("png", "jpg", "jpeg", "tif", "tiff", "webp")},
}


def plot_format(path: Path) -> str:
    """The image format the file name asks for; checked before any work."""
    file_format = Path(path).suffix.lstrip(".").lower()
    if file_format not in FORMATS:
        raise ParameterError("plot", f"{path}: the file name must end in one of .{', .'.join(FORMATS)}")
    return file_format


def figure_size(chart: BarChart) -> tuple[float, float]:
    bars = len(chart.groups) * len(chart.series)
    return COLUMN if bars <= MOST_BARS_IN_A_COLUMN else PAGE


def _series(axes: Axes, series: Series, positions: np.ndarray, width: float, colour: str) -> list[float]:
    """One run's bars, their values and marks; returns the heights its labels start at."""
    values = [np.nan if bar.value is None else bar.value for bar in series.bars]
    errors = np.array([bar.error or (np.nan, np.nan) for bar in series.bars]).T
    axes.bar(
        positions, values, width, label=series.label,
        yerr=errors if any(bar.error for bar in series.bars) else None,
        color="white" if series.baseline else colour, hatch="////" if series.baseline else None,
        edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.6, "capsize": 1.5, "capthick": 0.6},
    )  # fmt: skip
    tops = []
    for position, bar in zip(positions, series.bars):
        if bar.value is None:  # a row the run lacks (a published figure not given for it): said, not
            # left an empty slot that reads as a score of zero
            missing = {"xy": (position, 0.0), "textcoords": "offset points", "ha": "center", "va": "bottom"}
            axes.annotate(MISSING, xytext=(0, VALUE_RISE), rotation=90, fontsize=VALUE_FONT, **missing)
            continue
        top = bar.value + (bar.error[1] if bar.error else 0.0)
        tops.append(top)
        common = {"xy": (position, top), "textcoords": "offset points", "ha": "center", "va": "bottom"}
        axes.annotate(f"{bar.value:.3f}", xytext=(0, VALUE_RISE), rotation=90, fontsize=VALUE_FONT, **common)
        if bar.mark:
            axes.annotate(bar.mark, xytext=(0, MARK_RISE), fontsize=FONT, **common)
    return tops


def _wrapped(name: str, characters: int) -> str:
    """`name` in lines of at most `characters`, broken after spaces and hyphens or anywhere in a long
    word; every character kept."""
    if len(name) <= characters:
        return name
    return "\n".join(textwrap.wrap(name, characters, drop_whitespace=False))


def figure(chart: BarChart) -> Figure:
    """The figure, drawn but not saved (tests read its texts and layout)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    size = figure_size(chart)
    drawn = Figure(figsize=size, layout="constrained")
    axes = drawn.add_subplot()
    width = 0.8 / len(chart.series)
    groups = np.arange(len(chart.groups))
    colours = colormaps["tab10"]
    tops = []
    for index, series in enumerate(chart.series):
        offset = (index - (len(chart.series) - 1) / 2) * width
        tops += _series(axes, series, groups + offset, width, colours(index % colours.N))
    # every row's slots shown, a bar a run lacks included (fitted to the bars drawn, the axes
    # would cut off an "n/a" at an edge, and its row's name would stand off its bars)
    axes.set_xlim(-0.5, len(chart.groups) - 0.5)
    axes.set_xticks(groups, [_wrapped(name, TICK_CHARACTERS) for name in chart.groups], rotation=30,
                    ha="right", rotation_mode="anchor")  # fmt: skip
    axes.set_ylabel(chart.axis, fontsize=FONT + 1)
    axes.tick_params(labelsize=FONT)
    axes.spines[["top", "right"]].set_visible(False)
    longest = max(min(len(series.label), LEGEND_CHARACTERS) for series in chart.series)
    columns = int(size[0] * 72 // (FONT * (0.6 * longest + 3)))  # a legend entry: handle and label
    handles, labels = axes.get_legend_handles_labels()
    labels = [_wrapped(label, LEGEND_CHARACTERS) for label in labels]
    drawn.legend(handles, labels, loc="outside upper center", ncols=max(1, min(len(chart.series), columns)),
                 fontsize=FONT, frameon=False)  # fmt: skip
    characters = int(size[0] * 72 / (CAPTION_FONT * 0.55))
    caption = textwrap.fill(chart.caption, characters, break_on_hyphens=False, break_long_words=False)
    drawn.supxlabel(caption, x=0.01, ha="left", multialignment="left", fontsize=CAPTION_FONT)
    # room above the highest bar for its value and mark, in points of the laid-out axes
    drawn.get_layout_engine().execute(drawn)
    height = axes.get_position().height * size[1] * 72
    axes.set_ylim(0, max(tops, default=1.0) / max(0.5, 1 - LABEL_ROOM / height))
    return drawn


def figure_file(chart: BarChart, file_format: str) -> bytes:
    """The figure as a file of `file_format` (one of FORMATS), the same bytes for the same chart:
    no date in it, SVG's element ids from a fixed salt. Names are drawn as written: a `$` in a
    model or dataset name is no start of mathematics (whose parser refused some names)."""
    from matplotlib import rc_context

    settings = {"pdf.fonttype": 42, "svg.hashsalt": "rerank-eval", "text.parse_math": False}
    with rc_context(settings):  # (fonttype 42: TrueType fonts, which publishers accept)
        buffer = io.BytesIO()
        undated = (
            {"metadata": FORMATS[file_format]} if FORMATS[file_format] else {}
        )  # (PNG, JPEG, ... take none)
        figure(chart).savefig(buffer, format=file_format, dpi=DPI, **undated)
    return buffer.getvalue()
