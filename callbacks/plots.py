"""Matplotlib figures of the callbacks, drawn off-screen (Agg canvas, no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Collection

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_panels(
    path: str, panels: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str, log_scale: Collection[str] = (), max_columns: int = 3
) -> None:
    """One panel per title (rows of at most ``max_columns``), one line per curve of ``(x, y)`` points,
    saved as PNG at ``path``. Panels named in ``log_scale`` get a logarithmic y axis, symmetric-log
    when a value is <= 0 (an unbiased MMD² estimate dips below 0 once the samples match)."""
    columns = min(len(panels), max_columns)
    rows = math.ceil(len(panels) / columns)
    figure = new_figure(5 * columns, 3.6 * rows)
    all_axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for axes in all_axes[len(panels) :]:
        axes.set_axis_off()
    for axes, (title, curves) in zip(all_axes, panels.items()):
        for label, points in curves.items():
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="." if len(points) < 30 else None, label=label)
        axes.set(title=title, xlabel=xlabel)
        if title in log_scale:
            nonpositive = any(y <= 0 for points in curves.values() for _, y in points)
            if nonpositive:
                axes.set_yscale("symlog", linthresh=1e-4)
            else:
                axes.set_yscale("log")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if len(curves) > 1 and axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.savefig(path, format="png", dpi=110)
