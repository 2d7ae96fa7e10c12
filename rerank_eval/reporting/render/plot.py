"""A comparison as grouped bars per row, one bar per run; the baseline hatched and named."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rerank_eval.errors import ParameterError
from rerank_eval.reporting.compare.comparison import Comparison


def check_plot_path(path: Path) -> None:
    """matplotlib picks the image format from the file name; check it before any work."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if Path(path).suffix.lstrip(".").lower() not in formats:
        raise ParameterError(
            "plot", f"{path}: the file name must end in one of .{', .'.join(sorted(formats))}"
        )


def plot(comparison: Comparison, path: Path) -> None:
    """Grouped bars per row, one bar per run; the baseline hatched and named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_plot_path(path)
    rows = comparison.rows
    width = 0.8 / max(1, len(comparison.labels))
    figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(rows) + 2), 5), dpi=100)
    positions = np.arange(len(rows))
    for index, label in enumerate(comparison.labels):
        values = [row.cells[label].value or 0.0 for row in rows]
        is_baseline = label == comparison.baseline.label
        axes.bar(
            positions + index * width, values, width,
            label=f"{label} (baseline)" if is_baseline else label,
            hatch="//" if is_baseline else None, edgecolor="black" if is_baseline else None,
        )  # fmt: skip
    axes.set_xticks(positions + width * (len(comparison.labels) - 1) / 2)
    axes.set_xticklabels([row.name for row in rows], rotation=45, ha="right")
    axes.set_ylabel(comparison.metric)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
