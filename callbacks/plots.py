"""Matplotlib figures of the callbacks, drawn off-screen (Agg canvas, no pyplot state)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import lightning as L
import matplotlib
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from callbacks.run_outputs import run_directory, write_atomically
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
    saved as PNG at ``path``. Every point is marked, so that a curve of one point shows, and one of a
    few (a measurement every few epochs) reads as points joined by lines; a panel without points says
    so. Every panel spans the x range of all, so that a metric measured every few epochs lines up with
    those of every epoch. Panels named in ``log_scale`` get a logarithmic y axis, symmetric-log when a
    value is <= 0 (an unbiased MMD² estimate dips below 0 once the samples match)."""
    columns = min(len(panels), max_columns)
    rows = math.ceil(len(panels) / columns)
    figure = new_figure(5 * columns, 3.6 * rows)
    all_axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for axes in all_axes[len(panels) :]:
        axes.set_axis_off()
    every_x = [x for curves in panels.values() for points in curves.values() for x, _ in points]
    low, high = (min(every_x), max(every_x)) if every_x else (0, 1)
    margin = 0.05 * (high - low) if high > low else 0.5  # one x (one epoch): its integer tick alone
    for axes, (title, curves) in zip(all_axes, panels.items()):
        for label, points in curves.items():
            if points:
                xs, ys = zip(*points)
                axes.plot(xs, ys, marker="o", markersize=4 if len(points) < 50 else 1.5, label=label)
        axes.set(title=title, xlabel=xlabel)
        if not any(curves.values()):
            axes.text(0.5, 0.5, "not measured yet", ha="center", va="center", transform=axes.transAxes, color="grey")
        elif title in log_scale:
            nonpositive = any(y <= 0 for points in curves.values() for _, y in points)
            if nonpositive:
                axes.set_yscale("symlog", linthresh=1e-4)
            else:
                axes.set_yscale("log")
        axes.set_xlim(low - margin, high + margin)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.grid(alpha=0.3)
        if len(curves) > 1 and axes.get_legend_handles_labels()[0]:
            axes.legend()
    figure.savefig(path, format="png", dpi=110)


#: The saved grids' resolution: a power of two, so that a size in pixels divided by it and multiplied back is exact
#: (matplotlib truncates the canvas to whole pixels) and the grid is drawn one image pixel per PNG pixel.
GRID_DPI = 128
#: Height in pixels of the title strip above a saved grid.
TITLE_STRIP_PIXELS = 24
#: Pixels between a row name and the grid, and beside the title.
TEXT_MARGIN = 4


def experiment_name(trainer: L.Trainer) -> str:
    """The experiment a figure belongs to: the first logger's name (train.py names the loggers after the
    run), else that of the run folder's parent (``runs/<run_name>/version_N``), or of the run folder
    where it is no version folder. Reads :func:`run_directory`, a collective under DDP: call it on
    every rank (e.g. in ``setup``)."""
    name = trainer.loggers[0].name if trainer.loggers else None
    if name:
        return name
    folder = run_directory(trainer)
    return folder.parent.name if re.fullmatch(r"version_\d+", folder.name) else folder.name


def grid_title(experiment: str, epoch: int, step: int) -> str:
    """What a saved grid says of itself, so that it reads on its own: whose it is, the 1-based epoch, the global step."""
    return f"{experiment} · epoch {epoch} · step {step}"


def save_titled_grid(grid: Tensor, title: str, path: Path, row_names: Sequence[str] | None = None) -> None:
    """Save an image grid ``(C, H, W)`` in [0, 1] as PNG, atomically, under a strip of
    :data:`TITLE_STRIP_PIXELS` with ``title`` and, given ``row_names``, with a name left of each row.

    The grid keeps its pixels (those ``torchvision.utils.save_image`` writes): it is drawn one image
    pixel per PNG pixel with nearest-neighbour sampling, so that thin strokes stay crisp; without row
    names it starts at the PNG's left edge, below the strip. The PNG is wider than the grid only where
    the title needs it."""
    channels, height, width = grid.shape
    pixels = grid.expand(3, -1, -1) if channels == 1 else grid
    pixels = pixels.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    figure = Figure(dpi=GRID_DPI)
    renderer = FigureCanvasAgg(figure).get_renderer()
    title_text = figure.text(0, 0, title, fontsize=8, ha="center", va="center")
    names = [figure.text(0, 0, name, fontsize=7, ha="right", va="center") for name in row_names or ()]
    left = math.ceil(max(text.get_window_extent(renderer).width for text in names)) + 2 * TEXT_MARGIN if names else 0
    title_width = title_text.get_window_extent(renderer).width
    figure_width, figure_height = max(left + width, math.ceil(title_width) + 2 * TEXT_MARGIN), TITLE_STRIP_PIXELS + height
    figure.set_size_inches(figure_width / GRID_DPI, figure_height / GRID_DPI)
    axes = figure.add_axes((left / figure_width, 0, width / figure_width, height / figure_height))
    axes.imshow(pixels, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    half_title = title_width / 2 + TEXT_MARGIN  # centred over the grid, within the PNG
    centre = min(max(left + width / 2, half_title), figure_width - half_title)
    title_text.set_position((centre / figure_width, (height + TITLE_STRIP_PIXELS / 2) / figure_height))
    for row, text in enumerate(names):
        text.set_position(((left - TEXT_MARGIN) / figure_width, height * (1 - (row + 0.5) / len(names)) / figure_height))
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=GRID_DPI))


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
