"""Normalizing flow (RealNVP, Dinh et al., 2017): an invertible f_theta from data to a standard normal z, trained by
maximum likelihood through the change of variables. Per batch of m samples::

    z, log|det df/dx| = f(x)                       # layer by layer: coupling, [ActNorm], [invertible linear]
    log p(x) = log N(z; 0, I) + log|det df/dx|      # exact, not a bound
    descend -(1/m) sum_i log p(x_i)                # nats per sample (Adam)
    sample: x = f^{-1}(z), z ~ N(0, I)             # exact sampling by the inverse

Vectors (the 2-D mixtures) couple alternating coordinates. Images (C, H, W) with pixels in [0, 1] (MNIST,
``data.normalization: unit``) are first dequantised and logit-transformed as in the RealNVP paper, with the
log-determinant of that transform in the likelihood::

    x~ = (255 x + u) / 256,  u ~ U[0, 1)^D          # a density on [0, 1]^D whose integer cells hold P(x)
    y = logit(alpha + (1 - 2 alpha) x~)             # log|det| = sum log((1 - 2 alpha) / (p (1 - p))), p = alpha + ...
    -log P(x) <= -log p(x~) + D log 256             # nats per image of the 256-level pixels; / (D ln 2): bits/dim

then checkerboard couplings, a squeeze (2 x 2 pixels -> 4 channels) and channel couplings. Configs:
``configs/flow_ring8.yaml``, ``configs/flow_grid25.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import lightning as L
import torch
from torch import Tensor, nn

from core.errors import ConfigError
from lightning_modules.components.flow_layers import (
    ActNorm,
    AffineCoupling,
    FlowSequence,
    InvertibleLinear,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    image_conditioner,
    vector_conditioner,
)
from lightning_modules.components.fused_adam import fused_adam
from lightning_modules.components.latents import standard_normal_log_prob
from lightning_modules.components.mlp import require_widths


class Flow(L.LightningModule):
    """RealNVP-style flow over vectors or images.

    Logs per epoch ``train/nll`` (nats per sample), ``val/nll`` and ``test/nll``, and for images
    ``*/bits_per_dim`` (the 256-level pixels' NLL, the dequantisation's ``D log 256`` included).

    Args:
        sample_shape: ``(D,)`` or ``(C, H, W)``; linked from ``data.sample_shape`` by the CLI.
        couplings: Coupling layers (per scale for images: that many checkerboard ones, then as many channel ones).
        hidden: The conditioners' hidden widths (vectors), or ``[channels]`` of their convolutions (images).
        actnorm: An ActNorm before every coupling (Glow): each feature standardised from the first batch.
        mixing: An invertible linear map after every coupling (Glow's 1 x 1 convolution); off: the masks
            alternate only.
        squeeze: Images: squeeze 2 x 2 pixels into channels between the checkerboard and the channel couplings.
        logit_alpha: Images: alpha of the logit transform (RealNVP: 0.05), which keeps pixels off 0 and 1.
        lr: Adam learning rate.
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (2,),
        couplings: int = 8,
        hidden: Sequence[int] = (128, 128),
        actnorm: bool = True,
        mixing: bool = False,
        squeeze: bool = True,
        logit_alpha: float = 0.05,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if isinstance(couplings, bool) or not isinstance(couplings, int) or couplings < 1:
            raise ConfigError(f"model.couplings must be an integer >= 1 (coupling layers), got {couplings!r}.")
        if len(sample_shape) not in (1, 3):
            raise ConfigError(f"a flow models vectors (D,) or images (C, H, W); data.sample_shape is {tuple(sample_shape)}.")
        if not 0 < logit_alpha < 0.5 or not lr > 0:
            raise ConfigError(f"model.logit_alpha must be in (0, 0.5) and model.lr > 0, got {logit_alpha!r} and {lr!r}.")
        require_widths(hidden=hidden)
        self.save_hyperparameters()
        self.sample_shape = tuple(sample_shape)
        self.images = len(self.sample_shape) == 3
        self.flow, self.latent_shape = self.build_flow()

    def build_flow(self) -> tuple[FlowSequence, tuple[int, ...]]:
        """The layers, and the shape of z (an image's after the squeeze)."""
        hp, shape = self.hparams, self.sample_shape
        layers: list[nn.Module] = []

        def add_couplings(shape: tuple[int, ...], mask: Callable, conditioner: Callable) -> None:
            features = shape[0]
            for i in range(hp.couplings):
                if hp.actnorm:
                    layers.append(ActNorm(features, len(shape) - 1))
                layers.append(AffineCoupling(mask(shape, i % 2), conditioner(features, hp.hidden)))
                if hp.mixing:
                    layers.append(InvertibleLinear(features))

        if not self.images:
            add_couplings(shape, alternating_mask, vector_conditioner)
            return FlowSequence(layers), shape
        add_couplings(shape, checkerboard_mask, image_conditioner)
        if hp.squeeze:
            channels, height, width = shape
            if height % 2 or width % 2:
                raise ConfigError(f"model.squeeze needs an even image height and width, got {height} x {width}.")
            layers.append(Squeeze())
            shape = (4 * channels, height // 2, width // 2)
        add_couplings(shape, channel_mask, image_conditioner)
        return FlowSequence(layers), shape

    # --- the likelihood -------------------------------------------------------------------------
    def dequantised_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``y = logit(alpha + (1 - 2 alpha) x~)`` of the dequantised pixels and log|det dy/dx~| per image."""
        alpha = self.hparams.logit_alpha
        dequantised = (images * 255 + torch.rand_like(images)) / 256
        p = alpha + (1 - 2 * alpha) * dequantised
        log_p, log_1mp = p.log(), (-p).log1p()
        log_det = (math.log(1 - 2 * alpha) - log_p - log_1mp).flatten(1).sum(1)
        return log_p - log_1mp, log_det

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) per sample (images: of the dequantised pixels x~ in [0, 1]^D)."""
        log_det_logit = 0.0
        if self.images:
            x, log_det_logit = self.dequantised_logits(x)
        z, log_det = self.flow(x)
        return standard_normal_log_prob(z, event_dims=z.dim() - 1) + log_det + log_det_logit

    def metrics(self, x: Tensor) -> dict[str, Tensor]:
        """``nll`` in nats per sample (images: of the 256-level pixels) and, for images, ``bits_per_dim``."""
        nll = -self.log_prob(x).mean()
        if not self.images:
            return {"nll": nll}
        dims = math.prod(self.sample_shape)
        discrete_nll = nll + dims * math.log(256)
        return {"nll": discrete_nll, "bits_per_dim": discrete_nll / (dims * math.log(2))}

    #: What the run's summary says of the test metrics (callbacks.TestSplitMetrics).
    test_metric_units: ClassVar[dict[str, str]] = {
        "nll": " nats per image (of the 256-level pixels: the dequantised density's NLL + D ln 256)",
        "bits_per_dim": " bits per dimension",
    }

    def test_metrics(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``nll`` and ``bits_per_dim`` of one test batch (images), what ``test_step`` logs; the dequantisation noise
        is drawn from torch's generator, which ``callbacks.TestSplitMetrics`` seeds."""
        return self.metrics(batch[0])

    # --- sampling: the interface of the sample and mixture callbacks ------------------------------
    def sample_latent(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        device = rng.device if rng is not None else self.device
        return torch.randn(num_samples, *self.latent_shape, device=device, generator=rng)

    def fixed_inputs(self, num_samples: int, rng: torch.Generator) -> tuple[Tensor, None]:
        return self.sample_latent(num_samples, rng), None

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """x = f^{-1}(z); images back through the logit transform, pixels in [0, 1]."""
        x = self.flow.inverse(z)
        if not self.images:
            return x
        alpha = self.hparams.logit_alpha
        return ((torch.sigmoid(x) - alpha) / (1 - 2 * alpha)).clamp(0, 1)

    #: What :meth:`landscape` gives, for ``callbacks.CriticLandscape``'s colour bar.
    landscape_label = "log density"
    #: The colours cover the top 30 nats: far in a tail a flow's log density reaches -1e4 and more (measured on the
    #: grid of 25), which would leave every mode and bridge one colour.
    landscape_span = 30.0

    def landscape(self, points: Tensor) -> Tensor:
        """log p of each point: the learnt density under the data, where a WGAN's figure shows its critic."""
        return self.log_prob(points)

    # --- Lightning -----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.images and getattr(datamodule, "value_range", (0.0, 1.0)) != (0.0, 1.0):
            raise ConfigError(
                "a flow on images dequantises 256-level pixels in [0, 1]: set data.normalization: unit, "
                f"got {getattr(datamodule, 'normalization', None)!r}."
            )

    def shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x = batch[0]
        metrics = self.metrics(x)
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/{name}": value for name, value in metrics.items()},
            on_step=on_step,
            on_epoch=True,
            prog_bar=stage == "train",
            batch_size=len(x),
            sync_dist=not on_step,
        )
        return metrics["nll"]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def configure_optimizers(self):
        return fused_adam(self.parameters(), self.device, lr=self.hparams.lr)
