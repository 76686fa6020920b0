"""Reproducible randomness per epoch and per DDP rank, also across a mid-epoch resume."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from torch import Tensor

from core.seeding import epoch_seed


class EpochSeed(L.Callback):
    """Reseed torch's global RNG (CPU and CUDA) at the start of every training epoch, and carry
    each rank's RNG state in checkpoints.

    The seed is a function of (base seed, epoch, global rank), which buys two things:

    - DDP ranks draw *different* noise and dropout masks (``seed_everything`` alone gives every
      rank the same stream, so the ranks would generate identical fakes);
    - a run resumed from a checkpoint written at an epoch boundary replays exactly the random
      numbers of an uninterrupted one.

    A checkpoint written mid-epoch (Ctrl+C, SIGTERM, a step-interval checkpoint) resumes with no
    epoch start to reseed at, so every checkpoint also holds every rank's generator states
    (gathered, since only rank 0 writes the file), and a resumed run continues from them.

    Args:
        seed: Base seed; default: the run's ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0.
    """

    #: Checkpoint key of the per-rank generator states.
    CHECKPOINT_KEY = "rng_states_per_rank"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.restored_states: dict[str, Tensor] | None = None

    def epoch_seed(self, epoch: int, rank: int) -> int:
        base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", "0"))
        return epoch_seed(base, epoch, rank)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(self.epoch_seed(trainer.current_epoch, trainer.global_rank))

    @staticmethod
    def generator_states(device: torch.device) -> dict[str, Tensor]:
        states = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(device)
        return states

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Every rank builds the checkpoint (rank 0 writes it), so the gather is a collective all ranks reach.
        device = trainer.strategy.root_device
        gathered = {}
        for name, state in self.generator_states(device).items():
            states = trainer.strategy.all_gather(state.to(device)).cpu()
            gathered[name] = states if trainer.world_size > 1 else states.unsqueeze(0)
        checkpoint[self.CHECKPOINT_KEY] = gathered

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(self.CHECKPOINT_KEY)
        # A checkpoint of another world size belongs to a differently sharded run: nothing to continue.
        if saved is not None and len(saved["cpu"]) == trainer.world_size:
            # A copy: torch.set_rng_state crashes (segmentation fault, torch 2.14) on a row of the stacked
            # states handed over as a view.
            self.restored_states = {name: states[trainer.global_rank].clone() for name, states in saved.items()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Right before the first resumed batch; an epoch that starts afterwards reseeds as usual.
        if self.restored_states is None:
            return
        torch.set_rng_state(self.restored_states["cpu"])
        if "cuda" in self.restored_states and trainer.strategy.root_device.type == "cuda":
            torch.cuda.set_rng_state(self.restored_states["cuda"], trainer.strategy.root_device)
        self.restored_states = None
