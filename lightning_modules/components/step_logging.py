"""The bookkeeping around a manual-optimization training step: what it logs, and when.

A step hands over one dict of statistics per update it made (e.g. the adversarial step: one per
discriminator update, with the generator's beside it when G stepped too); :class:`StepStatistics`
turns them into ``train/<name>_step`` and ``train/<name>_epoch`` values the cheap way, so that the
step itself reads as its algorithm. :func:`gradient_norm` is the statistic measured before each
optimizer step.
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric


def gradient_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """Global L2 norm of the parameters' gradients (after DDP's all-reduce, so the same on every rank),
    as the root of the summed dot products: BLAS reads the gradients with every thread, faster on a
    CPU than ``torch.nn.utils.get_total_norm``'s per-tensor norms."""
    flat = [p.grad.reshape(-1) for p in parameters if p.grad is not None]
    return torch.stack([g.dot(g) for g in flat]).sum().sqrt()


def writes_step_logs(trainer: L.Trainer) -> bool:
    """Whether Lightning's loggers write the step values of the training batch now running: every
    ``log_every_n_steps``-th batch (counted across epochs, as on the loggers' step axis) and the
    last one; told from the fit loop's public batch progress."""
    every = trainer.log_every_n_steps
    return every > 0 and (
        (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0 or trainer.should_stop or bool(trainer.fast_dev_run)
    )


def show_in_progress_bar(module: L.LightningModule, values: dict[str, Tensor]) -> None:
    """The family's headline numbers for the progress bar (``callbacks.progress_bar``), not for the
    loggers: kept on the module, on the device, on the steps the loggers write
    (:func:`writes_step_logs`), where the bar reads them; reading waits for the device, which those
    steps do anyway. Not ``self.log(prog_bar=True)``: Lightning converts every progress-bar value it
    holds to a Python number after every batch, a wait per step for a value logged steps before."""
    if writes_step_logs(module.trainer):
        module.progress_bar_values = {name: value.detach() for name, value in values.items()}


def progress_bar_values(module: L.LightningModule) -> dict[str, Tensor]:
    """What :func:`show_in_progress_bar` kept last (nothing before the first logging step)."""
    return getattr(module, "progress_bar_values", {})


class StepStatistics:
    """Mixin of a LightningModule that logs named per-update statistics: ``train/<name>_step`` (mean
    over one training step's updates, this rank) and ``train/<name>_epoch`` (mean over the epoch's
    updates and the ranks).

    A subclass calls :meth:`track_statistics` in its ``__init__`` and :meth:`log_stats` at the end
    of each training step. Each ``self.log`` call is Python work worth a sizeable share of a small
    GAN's step on a CPU (docs/benchmarks.md has the numbers), so the per-step work is kept off it:
    epoch means accumulate in torchmetrics ``MeanMetric``s (one update per name and training step),
    handed to Lightning once per epoch (Lightning computes, syncs and resets them at epoch end), and
    step values go to Lightning only on the steps its loggers write (:func:`writes_step_logs`).
    Nothing here reads a value on the host, so a step that writes no logs never waits for the device.
    """

    def track_statistics(self, names: Iterable[str], in_progress_bar: Iterable[str] = ()) -> None:
        """The statistics to log, in logging order, and those the progress bar shows."""
        #: Running epoch means of the logged statistics (reduced across DDP ranks by torchmetrics).
        self.epoch_means = nn.ModuleDict({name: MeanMetric(nan_strategy="disable") for name in names})
        self._epoch_means_logged: set[str] = set()
        self._in_progress_bar = tuple(in_progress_bar)

    @property
    def logged_metric_names(self) -> set[str]:
        """The epoch metrics this module logs (``train/<stat>``): what a learning-curve panel may name."""
        return {f"train/{name}" for name in self.epoch_means}

    def log_stats(self, updates: list[dict[str, Tensor]], batch_size: int) -> dict[str, Tensor]:
        """Log the statistics of one training step's ``updates``; return their means over the step."""
        names = [name for name in self.epoch_means if any(name in stats for stats in updates)]
        values = {name: torch.stack([stats[name] for stats in updates if name in stats]) for name in names}
        for name, value in values.items():
            self.epoch_means[name].update(value)
            if name not in self._epoch_means_logged:
                self.log(f"train/{name}_epoch", self.epoch_means[name], on_step=False, on_epoch=True, batch_size=batch_size)
                self._epoch_means_logged.add(name)
        step_means = {name: value.mean() for name, value in values.items()}
        if writes_step_logs(self.trainer):
            self.log_dict(
                {f"train/{k}_step": v for k, v in step_means.items()}, on_step=True, on_epoch=False, batch_size=batch_size
            )
        show_in_progress_bar(self, {k: step_means[k] for k in self._in_progress_bar if k in step_means})
        return step_means

    def on_train_epoch_start(self) -> None:
        self._epoch_means_logged.clear()
