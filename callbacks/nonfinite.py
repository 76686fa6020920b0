"""Stop at the first non-finite loss, before a NaN can reach a checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from core.errors import NonFiniteLossError


class StopOnNonFiniteLoss(L.Callback):
    """Raise :class:`NonFiniteLossError` when a loss returned by ``training_step`` is NaN or infinite.

    The check runs after the step, before any checkpoint callback of that step (Lightning runs
    checkpointing last), so no checkpoint ever holds the diverged weights. Under DDP the verdict is
    agreed across ranks, so all stop together instead of one hanging in the next all-reduce.

    Args:
        every_n_steps: Check every n-th batch. On a GPU each check waits for the step to finish;
            raise this if that shows in a profile.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(outputs, dict) or batch_idx % self.every_n_steps:
            return
        losses = {name: value for name, value in outputs.items() if isinstance(value, torch.Tensor)}
        finite = all(bool(torch.isfinite(value).all()) for value in losses.values())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        values = ", ".join(f"{name}={value.item():.4g}" for name, value in losses.items())
        raise NonFiniteLossError(
            f"Non-finite loss at epoch {trainer.current_epoch + 1}, batch {batch_idx}, global step {trainer.global_step} "
            f"(rank {trainer.global_rank}: {values}). Training stopped; no checkpoint holds these weights. Lower the learning "
            "rates (model.lr_g / model.lr_d), check data.normalization, or resume from the last checkpoint with a new seed."
        )
