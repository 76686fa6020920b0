"""Matplotlib figures of the callbacks, drawn off-screen (Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Collection

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_panels(path: str, panels: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str, log_scale: Collection[str] = ()) -> None:
    """One panel per title, one line per curve of ``(x, y)`` points, saved as PNG at ``path``.

    Panels named in ``log_scale`` get a logarithmic y axis (for quantities spanning decades).
    """
    figure = new_figure(5 * len(panels), 3.6)
    for axes, (title, curves) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        for label, points in curves.items():
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="." if len(points) < 30 else None, label=label)
        axes.set(title=title, xlabel=xlabel, yscale="log" if title in log_scale else "linear")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if len(curves) > 1 and axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.savefig(path, format="png", dpi=110)
