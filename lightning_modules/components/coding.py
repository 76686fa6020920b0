"""What the autoencoders and the VAE share around their algorithms: the test step over their own
per-batch ``test_metrics`` (also what :class:`callbacks.TestSplitMetrics` measures during fit), and
one fused Adam over every parameter."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class EncoderDecoderModule(L.LightningModule):
    """Base of :class:`~lightning_modules.Autoencoder` and :class:`~lightning_modules.VAE`; a subclass
    defines ``test_metrics(images, batch_idx) -> dict[str, Tensor]`` and has ``hparams.lr``."""

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        self.log_dict({f"test/{name}": value for name, value in self.test_metrics(images, batch_idx).items()}, batch_size=len(images), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = self.device.type in ("cpu", "cuda")  # one kernel over all parameters, the same update
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=fused)
