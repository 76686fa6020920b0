"""MLP GAN (Goodfellow et al., 2014) on MNIST-like images.

Per iteration, with m = batch size and k = ``n_critic``::

    repeat k times:                                       # AdversarialModule.discriminator_step
        x_1..x_m ~ data,  z_1..z_m ~ N(0, I)
        ascend  (1/m) sum log D(x_i) + (1/m) sum log(1 - D(G(z_i)))   (Adam on D)
    z_1..z_m ~ N(0, I)                                    # AdversarialModule.generator_step
    SaturatingGANLoss:     descend (1/m) sum log(1 - D(G(z_i)))       (Adam on G)
    NonSaturatingGANLoss:  ascend  (1/m) sum log D(G(z_i))

The three homework experiments are configs of this one module: ``configs/gan_mnist.yaml``
(non-saturating), ``gan_mnist_saturating.yaml`` (the original loss, which stalls: watch
``train/d_fake`` and ``train/g_grad_norm`` fall towards 0) and ``gan_mnist_k5.yaml`` (k = 5, lr 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_modules.components.adversarial import AdversarialModule
from lightning_modules.components.compilation import CompileMode
from lightning_modules.components.losses import GANLoss, NonSaturatingGANLoss
from lightning_modules.components.mlp import (
    MLPDiscriminator,
    MLPGenerator,
    OutputActivation,
    init_normal_,
    require_output_range,
    require_widths,
)
from lightning_modules.components.packing import packed_shape


class GAN(AdversarialModule):
    """Unconditional GAN with MLP generator and discriminator.

    Args:
        sample_shape: (C, H, W) of the images; linked from ``data.sample_shape`` by the CLI.
        latent_dim: Size of the Gaussian noise vector z.
        generator_hidden: Widths of G's hidden layers.
        discriminator_hidden: Widths of D's hidden layers.
        negative_slope: LeakyReLU slope in both networks.
        dropout: Dropout after each of D's hidden layers.
        maxout_pieces: 1: D's hidden units are LeakyReLU units; k >= 2: maxout units of k pieces each
            (PacGAN's discriminator: 5), no other activation.
        generator_batch_norm: BatchNorm in G's hidden layers (off in the classic MLP GAN).
        weight_init_std: Linear weights from N(0, std^2), biases 0 (PacGAN, DCGAN: 0.02); unset: PyTorch's init.
        output_activation: G's last activation; must produce the data's range (``tanh`` for
            ``data.normalization: symmetric``, ``sigmoid`` for ``unit``, ``none`` for ``mean_std``).
        loss: The loss pair: ``NonSaturatingGANLoss`` (G ascends log D(G(z))) or
            ``SaturatingGANLoss`` (G descends log(1 - D(G(z))), the original minimax objective).
        n_critic: Discriminator steps per generator step (k).
        lr_g, lr_d: Adam learning rates of G and D.
        betas_g, betas_d: Adam betas of G and D; (0.5, 0.999) as in DCGAN: a shorter momentum
            memory suits the moving target of an adversarial game.
        compile: ``none`` (eager), or a ``torch.compile`` mode for the step's losses
            (:mod:`lightning_modules.components.compilation`; ``reduce-overhead`` on a GPU).
        seeds: Train a population, one member per seed, as one network
            (:mod:`lightning_modules.components.population`); unset: a single run.
        pack: Samples D judges at once (PacGAN's m: :mod:`lightning_modules.components.packing`); 1: one.
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 100,
        generator_hidden: Sequence[int] = (256, 512, 1024),
        discriminator_hidden: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        maxout_pieces: int = 1,
        generator_batch_norm: bool = False,
        weight_init_std: float | None = None,
        output_activation: OutputActivation = "tanh",
        loss: GANLoss = NonSaturatingGANLoss(),
        n_critic: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas_g: tuple[float, float] = (0.5, 0.999),
        betas_d: tuple[float, float] = (0.5, 0.999),
        compile: CompileMode = "none",
        seeds: list[int] | None = None,
        pack: int = 1,
    ) -> None:
        super().__init__(loss, latent_dim, n_critic, lr_g, lr_d, betas_g, betas_d, compile=compile, seeds=seeds, pack=pack)
        require_widths(generator_hidden=generator_hidden, discriminator_hidden=discriminator_hidden)
        self.save_hyperparameters()
        self.generator, self.discriminator = self.build_networks_per_member(self.initialised_networks)

    def initialised_networks(self) -> tuple[nn.Module, nn.Module]:
        networks = self.build_networks()
        if self.hparams.weight_init_std is not None:
            for network in networks:
                init_normal_(network, self.hparams.weight_init_std)
        return networks

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """G and D from the hyperparameters; a conditional GAN overrides only this."""
        hp = self.hparams
        generator = MLPGenerator(
            hp.latent_dim, hp.sample_shape, hp.generator_hidden, hp.negative_slope, hp.generator_batch_norm, hp.output_activation
        )
        discriminator = MLPDiscriminator(
            packed_shape(hp.sample_shape, hp.pack), hp.discriminator_hidden, hp.negative_slope, hp.dropout, hp.maxout_pieces
        )
        return generator, discriminator

    def setup(self, stage: str) -> None:
        super().setup(stage)
        require_output_range(self.hparams.output_activation, getattr(self.trainer, "datamodule", None))
