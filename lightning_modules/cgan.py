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

import torch
from torch import Tensor, nn

from core.errors import ConfigError
from lightning_modules.components.mlp import ConditionalMLPGenerator, ProjectionMLPDiscriminator
from lightning_modules.gan import GAN


class CGAN(GAN):
    """Class-conditional GAN: the :class:`GAN`'s MLPs, G told the label, D a projection discriminator.

    Args:
        num_classes: Number of classes; linked from ``data.num_classes`` by the CLI.
        label_embedding_dim: Size of the label embedding concatenated to G's noise.
        **gan_args: Every argument of :class:`GAN` (networks, loss, schedule, optimizers).
    """

    def __init__(self, num_classes: int = 10, label_embedding_dim: int = 10, **gan_args) -> None:
        if num_classes < 2 or label_embedding_dim < 1:
            raise ConfigError(
                f"model.num_classes must be >= 2 and model.label_embedding_dim >= 1, got {num_classes} and {label_embedding_dim}."
            )
        if gan_args.get("pack", 1) != 1:
            raise ConfigError(
                "model.pack: the projection discriminator scores one image against its one label; a CGAN does not pack "
                "(set model.pack: 1, or pack an unconditional GAN)."
            )
        super().__init__(**gan_args)

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        hp = self.hparams
        generator = ConditionalMLPGenerator(
            hp.num_classes, hp.label_embedding_dim, hp.latent_dim, hp.sample_shape,
            hidden_dims=hp.generator_hidden, negative_slope=hp.negative_slope, batch_norm=hp.generator_batch_norm,
            output_activation=hp.output_activation,
        )  # fmt: skip
        return generator, ProjectionMLPDiscriminator(
            hp.num_classes, hp.sample_shape, hp.discriminator_hidden, hp.negative_slope, hp.dropout, hp.maxout_pieces
        )

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.generator(z, labels)

    def score_packs(self, packs: Tensor, labels: Tensor | None) -> Tensor:
        return self.discriminator(packs, labels)

    def fixed_inputs(self, num_samples: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
        """Latents and labels in class order, ``num_samples / num_classes`` per class: a grid with
        one row per class, and a balanced set for the sample-quality metrics."""
        labels = torch.arange(num_samples, device=rng.device) * self.hparams.num_classes // num_samples
        return self.sample_latent(num_samples, rng), labels
