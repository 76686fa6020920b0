"""Per-epoch learning curves as one PNG, redrawn as training goes."""

from __future__ import annotations

from typing import Any

import lightning as L

from callbacks.plots import RedrawSchedule, draw_panels
from callbacks.run_outputs import run_directory, send_image_to_loggers, write_atomically
from core.errors import ConfigError

DEFAULT_PANELS = {"loss": ["train/d_loss", "train/g_loss"]}


def namespace(name: str) -> str:
    """The part of a metric's name before its first ``/`` (``train``, ``quality``; ``""`` for none)."""
    return name.partition("/")[0] if "/" in name else ""


class LearningCurves(L.Callback):
    """Plot epoch-level metrics, one panel per group, to ``learning_curves.png`` in the run folder.

    Reads ``<name>_epoch`` (or ``<name>``) from the logged metrics, so it plots exactly what the
    loggers receive: the module's epoch means, and what other callbacks measure every few epochs and
    when training ends (``quality/fid``, ``test/nll``, ``eval/modes``, sent by
    :func:`callbacks.run_outputs.log_scalars`). A value counts once, at the 1-based epoch it was logged
    in (0: before the first): it is recorded when the trainer holds a new value object for the name (a
    measurement logs a new tensor; an older measurement left in the trainer's metrics is not one
    again). The metrics are read at an epoch's end and, to catch what callbacks later in the list log
    then, when a checkpoint is written (after every callback's epoch-end hook), when the next epoch
    starts and when fitting ends (after every callback's train-end hook); a later value of the same
    epoch replaces the earlier one. The history is checkpointed, so a resumed run continues the same
    curves. The final figure is drawn, and sent to the loggers, when fitting ends.

    Args:
        panels: Panel title -> metric names. Default: one panel with ``train/d_loss`` and ``train/g_loss``.
            Names under a prefix the module logs (``train/``) must be among its ``logged_metric_names``
            where it declares them; names under another prefix (``quality/``, ``eval/``) are other callbacks'.
        log_scale: Titles of the panels drawn with a logarithmic y axis (e.g. gradient norms,
            which span orders of magnitude when a generator saturates).
        filename: Name of the PNG in the run folder.
        redraw_seconds: The figure is redrawn at an epoch's end at most this often, and when
            fitting ends (0: after every epoch): drawing takes longer than a 2-D WGAN epoch (docs/benchmarks.md).
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
        self.recorded: dict[str, Any] = {}  # the value object last recorded per name; a resumed trainer starts empty

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.path = run_directory(trainer) / self.filename
        logged = getattr(pl_module, "logged_metric_names", None)
        if logged is None:  # a module that does not declare its metrics: nothing to check against
            return
        own = {namespace(name) for name in logged}
        missing = [name for names in self.panels.values() for name in names if namespace(name) in own and name not in logged]
        if missing:
            raise ConfigError(
                f"LearningCurves panels name {missing}, which {type(pl_module).__name__} does not log; it logs {sorted(logged)}."
            )

    def read(self, trainer: L.Trainer) -> None:
        """Record each panel metric whose value is new since the last reading, at the latest epoch begun."""
        metrics = trainer.callback_metrics
        epoch = trainer.fit_loop.epoch_progress.current.started  # 1-based; the last epoch run once training ended
        for names in self.panels.values():
            for name in names:
                value = metrics.get(f"{name}_epoch", metrics.get(name))
                if value is None or not self.is_new(name, value):
                    continue
                self.recorded[name] = value
                points = self.history.setdefault(name, [])
                if points and points[-1][0] == epoch:
                    points[-1] = (epoch, float(value))
                else:
                    points.append((epoch, float(value)))

    def is_new(self, name: str, value: Any) -> bool:
        """Whether ``value`` is not the object recorded last, nor its copy on another device (the
        trainer's teardown moves its own metrics to the CPU before fitting ends)."""
        last = self.recorded.get(name)
        if value is last:
            return False
        moved = last is not None and getattr(last, "device", None) != getattr(value, "device", None)
        return not (moved and float(last) == float(value))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer)  # what callbacks after this one logged when the epoch before ended

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer)
        if trainer.is_global_zero and self.redraw.due():
            write_atomically(self.path, self.draw)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.read(trainer)  # so that a run resumed from this checkpoint has what was logged since the last reading
        if self.state_key in checkpoint.get("callbacks", {}):
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.read(trainer)  # the final measurements
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
