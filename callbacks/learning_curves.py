"""Per-epoch learning curves as one PNG, redrawn as training goes."""

from __future__ import annotations

from typing import Any

import lightning as L

from callbacks.plots import RedrawSchedule, draw_panels
from callbacks.run_outputs import run_directory, send_image_to_loggers, write_atomically
from core.errors import ConfigError

DEFAULT_PANELS = {"loss": ["train/d_loss", "train/g_loss"]}


class LearningCurves(L.Callback):
    """Plot epoch-level metrics, one panel per group, to ``learning_curves.png`` in the run folder.

    Reads ``<name>_epoch`` (or ``<name>``) from the logged metrics, so it plots exactly what the
    loggers receive. Its history is checkpointed, so a resumed run continues the same curves.
    The final figure is also sent to the loggers when training ends.

    Args:
        panels: Panel title -> metric names. Default: one panel with ``train/d_loss`` and ``train/g_loss``.
        log_scale: Titles of the panels drawn with a logarithmic y axis (e.g. gradient norms,
            which span orders of magnitude when a generator saturates).
        filename: Name of the PNG in the run folder.
        redraw_seconds: The figure is redrawn at an epoch's end at most this often, and when
            training ends (0: after every epoch): drawing takes longer than a 2-D WGAN epoch (docs/benchmarks.md).
    """

    def __init__(
        self,
        panels: dict[str, list[str]] | None = None,
        log_scale: list[str] | None = None,
        filename: str = "learning_curves.png",
        redraw_seconds: float = 30.0,
    ):
        self.panels = panels or DEFAULT_PANELS
        self.log_scale = set(log_scale or ())
        self.filename = filename
        self.redraw = RedrawSchedule(redraw_seconds)
        self.history: dict[str, list[tuple[int, float]]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.path = run_directory(trainer) / self.filename
        logged = getattr(pl_module, "logged_metric_names", None)
        if logged is None:  # a module that does not declare its metrics: nothing to check against
            return
        missing = [name for names in self.panels.values() for name in names if name not in logged]
        if missing:
            raise ConfigError(
                f"LearningCurves panels name {missing}, which {type(pl_module).__name__} does not log; it logs {sorted(logged)}."
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        epoch = trainer.current_epoch + 1
        for names in self.panels.values():
            for name in names:
                value = metrics.get(f"{name}_epoch", metrics.get(name))
                if value is not None:
                    self.history.setdefault(name, []).append((epoch, float(value)))
        if trainer.is_global_zero and self.redraw.due():
            write_atomically(self.path, self.draw)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.history:
            write_atomically(self.path, self.draw)
            send_image_to_loggers(trainer, "learning_curves", self.path, caption=f"after epoch {trainer.current_epoch}")

    def draw(self, path: str) -> None:
        curves = {
            title: {name.removeprefix("train/"): self.history.get(name, []) for name in names}
            for title, names in self.panels.items()
        }
        draw_panels(path, curves, xlabel="epoch", log_scale=self.log_scale)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = state_dict["history"]
