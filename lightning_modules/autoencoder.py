"""Autoencoders on MNIST: an MLP that squeezes an image through a small code and back.

Per batch of m images x with pixels in [0, 1] (``data.normalization: unit``)::

    x~ = x + sigma * eps,  eps ~ N(0, I)         # corruption (sigma = noise_std; 0: a plain autoencoder)
    c  = encoder(x~)                             # the code: code_size numbers (2: a map you can plot)
    x^ = decoder(c)                              # sigmoid output for BCE, linear output for MSE
    descend (1/m) sum_i loss(x^_i, x_i)          # the target is always the clean x (Adam)

With ``activation: identity`` every layer is linear, so the whole map is: trained with MSE it can at
best reach PCA's rank-``code_size`` reconstruction error, and a nonlinear one can go below it
(docs/autoencoders.md measures both). Configs: ``configs/ae_mnist*.yaml``, ``configs/dae_mnist.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import ConfigError
from lightning_modules.components.coding import EncoderDecoderModule
from lightning_modules.components.mlp import Activation, mlp, require_widths
from lightning_modules.components.step_logging import show_in_progress_bar

ReconstructionLoss = Literal["bce", "mse"]


class Autoencoder(EncoderDecoderModule):
    """MLP autoencoder, optionally denoising.

    Logs ``train/loss``, ``val/loss`` and ``val/mse`` per epoch; ``test/mse`` on clean test inputs
    and ``test/mse_sigma_<s>`` on inputs corrupted with each of ``test_noise_stds`` (the same noise
    for every model: seeded by sigma and batch). ``mse`` is the mean squared error per pixel of the
    [0, 1] reconstruction, whatever the training loss, so that every autoencoder compares.

    Args:
        sample_shape: (C, H, W); linked from ``data.sample_shape`` by the CLI.
        code_size: Size of the code (the bottleneck).
        encoder_hidden, decoder_hidden: Hidden widths of the two MLPs.
        activation: Hidden activation; ``identity`` gives the linear autoencoder.
        loss: ``bce`` (sigmoid output, binary cross-entropy per pixel: MNIST pixels are nearly
            binary) or ``mse`` (linear output, squared error: the setting in which a linear
            autoencoder equals PCA).
        noise_std: sigma of the Gaussian corruption of training inputs (denoising autoencoder).
        test_noise_stds: The sigmas at which the test reconstruction error is also measured.
        lr: Adam learning rate.
        anneal_lr: Cosine-anneal the learning rate to 0 over the run (per step; needs trainer.max_epochs or max_steps).
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        code_size: int = 2,
        encoder_hidden: Sequence[int] = (512, 256),
        decoder_hidden: Sequence[int] = (256, 512),
        activation: Activation = "relu",
        loss: ReconstructionLoss = "bce",
        noise_std: float = 0.0,
        test_noise_stds: Sequence[float] = (0.1, 0.3, 0.5),
        lr: float = 1e-3,
        anneal_lr: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(code_size, bool) or not isinstance(code_size, int) or code_size < 1:
            raise ConfigError(f"model.code_size must be an integer >= 1, got {code_size!r}.")
        if loss not in ("bce", "mse"):
            raise ConfigError(f"model.loss must be 'bce' or 'mse', got {loss!r}.")
        if not noise_std >= 0 or not all(sigma >= 0 for sigma in test_noise_stds):
            raise ConfigError(
                "model.noise_std and model.test_noise_stds must be >= 0 (0: no corruption), "
                f"got {noise_std!r} and {list(test_noise_stds)!r}."
            )
        if not lr > 0:
            raise ConfigError(f"model.lr must be > 0, got {lr!r}.")
        require_widths(encoder_hidden=encoder_hidden, decoder_hidden=decoder_hidden)
        self.save_hyperparameters()
        self.code_size = code_size
        self.sample_shape = tuple(sample_shape)
        pixels = math.prod(self.sample_shape)
        self.encoder = mlp(pixels, encoder_hidden, code_size, activation)
        self.decoder = mlp(code_size, decoder_hidden, pixels, activation)

    @property
    def logged_metric_names(self) -> set[str]:
        """The epoch metrics this module logs: what a learning-curve panel may name."""
        return {
            "train/loss",
            "val/loss",
            "val/mse",
            "test/mse",
            *(f"test/mse_sigma_{sigma:g}" for sigma in self.hparams.test_noise_stds),
        }

    # --- the interface of the latent-space callbacks -------------------------------------------
    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images.flatten(1))

    def decode(self, codes: Tensor) -> Tensor:
        """Images with pixels in [0, 1] (a linear decoder may step outside; displays clamp)."""
        output = self.decoder(codes).view(-1, *self.sample_shape)
        return torch.sigmoid(output) if self.hparams.loss == "bce" else output

    # --- the algorithm -------------------------------------------------------------------------
    def corrupt(self, images: Tensor, sigma: float, rng: torch.Generator | None = None) -> Tensor:
        if sigma == 0:
            return images
        return images + sigma * torch.randn(images.shape, device=images.device, generator=rng)

    def reconstruction_loss(self, images: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """(training loss, MSE per pixel of the [0, 1] reconstruction) of ``images`` from ``inputs``."""
        output = self.decoder(self.encoder(inputs.flatten(1)))
        target = images.flatten(1)
        if self.hparams.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(output, target)
            reconstruction = torch.sigmoid(output)
        else:
            loss = F.mse_loss(output, target)
            reconstruction = output
        return loss, F.mse_loss(reconstruction.detach(), target)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        loss, _ = self.reconstruction_loss(images, self.corrupt(images, self.hparams.noise_std))
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        show_in_progress_bar(self, {"loss": loss.detach()})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        loss, mse = self.reconstruction_loss(images, images)
        self.log_dict({"val/loss": loss, "val/mse": mse}, batch_size=len(images), sync_dist=True)

    def test_metrics(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``mse`` of clean inputs and ``mse_sigma_<s>`` of corrupted ones, for one test batch (the
        noise is seeded by sigma and ``batch_idx``: the same for every model)."""
        images, _ = batch
        metrics = {"mse": self.reconstruction_loss(images, images)[1]}
        for sigma in self.hparams.test_noise_stds:
            rng = torch.Generator(images.device).manual_seed(round(1000 * sigma) * 1_000_003 + batch_idx)
            metrics[f"mse_sigma_{sigma:g}"] = self.reconstruction_loss(images, self.corrupt(images, sigma, rng))[1]
        return metrics
