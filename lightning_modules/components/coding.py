"""What the autoencoders and the VAE share around their algorithms: the test step over their own
per-batch ``test_metrics`` (also what :class:`callbacks.TestSplitMetrics` measures during fit), and
one fused Adam over every parameter, optionally with its learning rate annealed to 0 or scheduled per epoch."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from core.errors import ConfigError
from lightning_modules.components.fused_adam import fused_adam


class EncoderDecoderModule(L.LightningModule):
    """Base of :class:`~lightning_modules.Autoencoder` and :class:`~lightning_modules.VAE`; a subclass
    defines ``test_metrics(batch, batch_idx) -> dict[str, Tensor]`` and has ``hparams.lr`` and
    ``hparams.anneal_lr``."""

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log_dict(
            {f"test/{name}": value for name, value in self.test_metrics(batch, batch_idx).items()},
            batch_size=len(batch[0]),
            sync_dist=True,
        )

    def adam_settings(self) -> dict[str, Any]:
        """Adam's settings; the VAE adds its epsilon."""
        return {"lr": self.hparams.lr}

    def epoch_lr_factor(self) -> Callable[[int], float] | None:
        """A factor of the learning rate per 0-based epoch (the VAE's IWAE schedule), or none."""
        return None

    def configure_optimizers(self):
        optimizer = fused_adam(self.parameters(), self.device, **self.adam_settings())
        if (factor := self.epoch_lr_factor()) is not None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if not self.hparams.anneal_lr:
            return optimizer
        # Cosine from lr to 0 over every step of the run: the last epochs average out Adam's noise,
        # which is what a linear autoencoder needs to reach PCA's error (docs/autoencoders.md).
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ConfigError(
                "model.anneal_lr needs a run of known length: set trainer.max_epochs or trainer.max_steps (not only max_time)."
            )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
