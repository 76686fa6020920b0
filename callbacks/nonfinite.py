"""Stop at the first non-finite loss, before a NaN can reach a checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from core.errors import ConfigError, NonFiniteLossError
from lightning_modules.components.step_logging import writes_step_logs


class StopOnNonFiniteLoss(L.Callback):
    """Raise :class:`NonFiniteLossError` once a loss returned by ``training_step`` has been NaN or infinite.

    A batch only keeps its losses (references to the tensors the step returned: no work on the device,
    no wait for it). The host reads them, all since the last read in one wait, where a wait is paid
    anyway or must be: on the batches whose step values the loggers write, at the end of every epoch
    (before its measurements and checkpoints), and whenever a checkpoint is about to be written
    (``on_save_checkpoint``: the error comes before the file, so no checkpoint ever holds the diverged
    weights). A checkpoint callback with ``save_weights_only`` calls no callback hook, so with one they
    are read after every batch, before the checkpoint callbacks (Lightning runs them last). A run thus
    stops up to ``log_every_n_steps`` batches after its loss diverged, and the error names the batch
    where it did. Under DDP the verdict is agreed across ranks at those points, the same on every rank,
    so all stop together instead of one hanging in the next all-reduce.

    Args:
        every_n_steps: Also read them after every n-th batch, to stop sooner after a divergence (default:
            only where said above). On a GPU each read waits for the step to finish.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(f"StopOnNonFiniteLoss.every_n_steps must be >= 1 or null, got {every_n_steps!r}.")
        self.every_n_steps = every_n_steps
        #: ``((epoch, batch, global step), losses)`` of each batch since the last read.
        self.unread: list[tuple[tuple[int, int, int], dict[str, Tensor]]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.unread = []
        self.read_every_batch = any(getattr(callback, "save_weights_only", False) for callback in trainer.checkpoint_callbacks)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        outputs = outputs if isinstance(outputs, dict) else {}
        losses = {name: value.detach() for name, value in outputs.items() if isinstance(value, Tensor)}
        if losses:
            self.unread.append(((trainer.current_epoch + 1, batch_idx, trainer.global_step), losses))
        every = self.every_n_steps
        if writes_step_logs(trainer) or self.read_every_batch or (every is not None and batch_idx % every == 0):
            self.raise_if_diverged(trainer)

    def first_non_finite(self) -> tuple[tuple[int, int, int], dict[str, Tensor]] | None:
        """The first unread batch with a non-finite loss, or ``None``; the host waits for the device here."""
        unread, self.unread = self.unread, []
        values = [value.reshape(-1) for _, losses in unread for value in losses.values()]
        if not values or bool(torch.cat(values).isfinite().all()):  # one wait for them all
            return None
        return next(batch for batch in unread if not all(bool(value.isfinite().all()) for value in batch[1].values()))

    def raise_if_diverged(self, trainer: L.Trainer) -> None:
        first = self.first_non_finite()
        if not trainer.strategy.reduce_boolean_decision(first is not None, all=False):
            return
        if first is not None:
            (epoch, batch, step), losses = first
            values = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items())
            where = f"at epoch {epoch}, batch {batch}, global step {step} (rank {trainer.global_rank}: {values})"
        else:
            where = f"on another rank, by global step {trainer.global_step} (rank {trainer.global_rank}: finite)"
        raise NonFiniteLossError(
            f"Non-finite loss {where}. Training stopped; no checkpoint holds these weights. Lower the learning "
            "rates (model.lr_g / model.lr_d), check data.normalization, or resume from the last checkpoint with a new seed."
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.raise_if_diverged(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.raise_if_diverged(trainer)
