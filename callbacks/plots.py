"""Matplotlib figures of the callbacks, drawn off-screen (Agg canvas, no pyplot state)."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import matplotlib
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from callbacks.run_outputs import write_atomically
from core.errors import ConfigError


class RedrawSchedule:
    """When to redraw a figure that grows during training: drawing one with matplotlib takes longer
    than an epoch of a 2-D WGAN (docs/benchmarks.md), so at most once every ``seconds`` (callers
    draw once more when training ends). ``seconds = 0`` redraws at every chance."""

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ConfigError(f"redraw_seconds must be >= 0, got {seconds!r}.")
        self.seconds = seconds
        self.last = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_panels(
    path: str,
    panels: dict[str, dict[str, list[tuple[float, float]]]],
    xlabel: str,
    log_scale: Collection[str] = (),
    max_columns: int = 3,
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


def save_labelled_grid(grid: Tensor, row_names: Sequence[str], path: Path) -> None:
    """Save an image grid ``(C, H, W)`` in [0, 1] with a name left of each row, atomically."""
    height, width = grid.shape[1:]
    figure = new_figure(1.5 + width / 60, height / 60)
    axes = figure.add_subplot()
    axes.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    row_height = height / len(row_names)
    axes.set_yticks([row_height * (i + 0.5) for i in range(len(row_names))], row_names)
    axes.set_xticks([])
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def draw_codes(path: str, codes: Tensor, labels: Tensor, class_names: Sequence[str], title: str) -> None:
    """Scatter of 2-D codes, one colour per class. The view holds the central 98 % of each axis (an
    autoencoder's code has long tails that would squeeze the crowded centre into a corner); how many
    points fall outside is in the title."""
    figure = new_figure(7, 6)
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    for label, name in enumerate(class_names):
        points = codes[labels == label]
        axes.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=2, color=colours(label % 10), label=name)
    low, high = torch.quantile(codes, torch.tensor([0.01, 0.99]), dim=0)
    margin = 0.05 * (high - low)
    low, high = low - margin, high + margin
    outside = int(((codes < low) | (codes > high)).any(dim=1).sum())
    axes.set(xlim=(low[0].item(), high[0].item()), ylim=(low[1].item(), high[1].item()), xlabel="code 1", ylabel="code 2")
    axes.set_title(f"{title}\n({outside} of {len(codes)} points outside the view)" if outside else title, fontsize=10)
    axes.legend(markerscale=5, loc="center left", bbox_to_anchor=(1, 0.5))
    figure.savefig(path, format="png", dpi=110)


def draw_confusion(path: str, confusion: Tensor, class_names: Sequence[str], title: str) -> None:
    """The confusion matrix as a heat map, each cell annotated with its count."""
    figure = new_figure(7, 6)
    axes = figure.add_subplot()
    image = axes.imshow(confusion.numpy(), cmap="Blues")
    dark = confusion.max().item() / 2
    for true, row in enumerate(confusion.tolist()):
        for predicted, count in enumerate(row):
            axes.text(
                predicted, true, str(count), ha="center", va="center", fontsize=7, color="white" if count > dark else "black"
            )
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90 if max(map(len, class_names)) > 2 else 0)
    axes.set_yticks(ticks, class_names)
    axes.set(title=title, xlabel="predicted class", ylabel="true class")
    figure.colorbar(image, ax=axes, shrink=0.8, label="test images")
    figure.savefig(path, format="png", dpi=110)
