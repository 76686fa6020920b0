"""Conditional GAN (Mirza & Osindero, 2014) on labelled images, e.g. Fashion-MNIST.

The GAN of :mod:`lightning_modules.gan` with both networks told the class y of each sample::

    repeat k times:                                         # AdversarialModule.discriminator_step
        (x_i, y_i) ~ data,  z_i ~ N(0, I),  i = 1..m
        ascend  (1/m) sum log D(x_i, y_i) + (1/m) sum log(1 - D(G(z_i, y_i), y_i))   (Adam on D)
    z_i ~ N(0, I), with the same batch's labels y_i         # AdversarialModule.generator_step
    ascend  (1/m) sum log D(G(z_i, y_i), y_i)                                        (Adam on G)

Conditioning (``lightning_modules/components/mlp.py``):

- G(z, y): z concatenated with a learned embedding of y;
- D(x, y): projection discriminator, ``w . phi(x) + b + embed(y) . phi(x)``, so a fake loses not
  only by looking unreal but by not looking like *its* class.

Fake labels are the real batch's labels, so G is trained on the data's class frequencies. The
sample grid has one row per class, labelled with the class names, and the sample-quality
callback reports the conditional accuracy: the share of samples the domain classifier assigns to
the class they were asked for (``configs/cgan_fashion_mnist.yaml``, ``docs/cgan_fashion_mnist.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_modules.components.adversarial import AdversarialModule
from lightning_modules.components.losses import GeneratorLossName, gan_loss
from lightning_modules.components.mlp import (
    ConditionalMLPGenerator,
    OutputActivation,
    ProjectionMLPDiscriminator,
    require_output_range,
)
from lightning_modules.errors import ConfigError


class CGAN(AdversarialModule):
    """Class-conditional GAN with MLP generator and projection discriminator.

    Args:
        sample_shape: (C, H, W) of the images; linked from ``data.sample_shape`` by the CLI.
        num_classes: Number of classes; must equal the datamodule's.
        label_embedding_dim: Size of the label embedding concatenated to G's noise.
        latent_dim: Size of the Gaussian noise vector z.
        generator_hidden, discriminator_hidden: Widths of the hidden layers.
        negative_slope: LeakyReLU slope in both networks.
        dropout: Dropout after each of D's hidden layers.
        generator_batch_norm: BatchNorm in G's hidden layers.
        output_activation: G's last activation, matching ``data.normalization`` (as in :class:`GAN`).
        generator_loss: ``non_saturating`` or ``saturating``.
        n_critic: Discriminator steps per generator step (k).
        lr_g, lr_d: Adam learning rates of G and D.
        betas_g, betas_d: Adam betas of G and D (DCGAN's (0.5, 0.999)).
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        label_embedding_dim: int = 10,
        latent_dim: int = 100,
        generator_hidden: Sequence[int] = (256, 512, 1024),
        discriminator_hidden: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        generator_batch_norm: bool = False,
        output_activation: OutputActivation = "tanh",
        generator_loss: GeneratorLossName = "non_saturating",
        n_critic: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__(gan_loss(generator_loss), latent_dim, n_critic, lr_g, lr_d, betas_g, betas_d)
        if num_classes < 2 or label_embedding_dim < 1:
            raise ConfigError(f"model.num_classes must be >= 2 and model.label_embedding_dim >= 1, got {num_classes} and {label_embedding_dim}.")
        self.save_hyperparameters()
        self.generator = ConditionalMLPGenerator(
            num_classes, label_embedding_dim, latent_dim, sample_shape,
            hidden_dims=generator_hidden, negative_slope=negative_slope, batch_norm=generator_batch_norm, output_activation=output_activation,
        )  # fmt: skip
        self.discriminator = ProjectionMLPDiscriminator(num_classes, sample_shape, discriminator_hidden, negative_slope, dropout)

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.generator(z, labels)

    def score(self, images: Tensor, labels: Tensor | None) -> Tensor:
        return self.discriminator(images, labels)

    def grid_inputs(self, num_samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Latents and labels in class order, ``num_samples / num_classes`` per class: a grid with
        one row per class, and a balanced set for the sample-quality metrics."""
        labels = torch.arange(num_samples, device=generator.device) * self.hparams.num_classes // num_samples
        return self.sample_latent(num_samples, generator), labels

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        require_output_range(self.hparams.output_activation, datamodule)
        data_classes = getattr(datamodule, "num_classes", self.hparams.num_classes)
        if data_classes != self.hparams.num_classes:
            raise ConfigError(f"model.num_classes={self.hparams.num_classes} but the data has {data_classes} classes: set model.init_args.num_classes={data_classes}.")
