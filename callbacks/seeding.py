"""Reproducible randomness per epoch and per DDP rank."""

from __future__ import annotations

import os

import lightning as L
import torch


class EpochSeed(L.Callback):
    """Reseed torch's global RNG (CPU and CUDA) at the start of every training epoch.

    The seed is a function of (base seed, epoch, global rank), which buys two things:

    - DDP ranks draw *different* noise and dropout masks (``seed_everything`` alone gives every
      rank the same stream, so the ranks would generate identical fakes);
    - resuming from a checkpoint written at an epoch boundary replays exactly the random numbers
      of an uninterrupted run, without storing RNG state (only rank 0 writes the checkpoint, so
      per-rank RNG states could not be restored anyway).

    Args:
        seed: Base seed; default: the run's ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def epoch_seed(self, epoch: int, rank: int) -> int:
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", "0"))
        return (base + 1_000_003 * epoch + 998_244_353 * rank) % 2**63

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.epoch_seed(trainer.current_epoch, trainer.global_rank))
