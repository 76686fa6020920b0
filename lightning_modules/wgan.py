"""Wasserstein GAN (Arjovsky et al., 2017) on low-dimensional data: the 2-D Gaussian mixtures.

Generator and critic, one hidden layer each by default (widths and depth are config keys)::

    h_x(w) = X2 relu(X1 w + x1) + x2          d_y(a) = Y2 relu(Y1 a + y1) + y2

Objective ``min_x max_y E_a[d_y(a)] - E_w[d_y(h_x(w))]``, estimated on minibatches of the fixed
empirical sample ``a`` and of noise ``w`` drawn with ``torch.distributions``. Iteration k::

    a_1..a_m ~ empirical sample,  w_1..w_m ~ noise        # AdversarialModule.discriminator_step
    descend  (1/m) sum d_y(h_x(w_i)) - (1/m) sum d_y(a_i)  [+ gradient penalty]   (Adam on y)
    keep d_y Lipschitz                                     # lipschitz.after_step: clip / renormalise
    if k mod n_critic == 0:                                # AdversarialModule.generator_step
        w_1..w_m ~ noise;  descend  -(1/m) sum d_y(h_x(w_i))                     (Adam on x)

Configs: ``configs/wgan_<dataset>_<strategy>.yaml``; results and the command that made them in
``docs/wgan_mixtures.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal, Uniform

from core.errors import ConfigError
from lightning_modules.components.adversarial import AdversarialModule
from lightning_modules.components.compilation import CompileMode
from lightning_modules.components.lipschitz import LipschitzStrategy, SpectralNormalization, TorchSpectralNorm
from lightning_modules.components.losses import WassersteinLoss
from lightning_modules.components.mlp import MLPDiscriminator, MLPGenerator, require_widths
from lightning_modules.components.packing import packed_shape

NoiseName = Literal["normal", "uniform"]


class WGAN(AdversarialModule):
    """WGAN with ReLU MLPs and a choice of Lipschitz strategy for the critic.

    Args:
        sample_shape: Shape of one data point, ``(2,)`` for the mixtures; linked from
            ``data.sample_shape`` by the CLI.
        latent_dim: Size of the noise w.
        noise: ``normal`` (N(0, I)) or ``uniform`` (U[-1, 1]^latent_dim).
        generator_hidden: Widths of the generator's hidden layers; ``[128]`` is h_x above, more
            entries give the deeper variant.
        critic_hidden: Widths of the critic's hidden layers.
        lipschitz: How the critic is kept Lipschitz, a strategy object with its own arguments:
            ``SpectralNormalization`` (hand-written power iteration, weights renormalised after
            each step), ``TorchSpectralNorm`` (``torch.nn.utils.parametrizations.spectral_norm``),
            ``WeightClipping``, ``GradientPenalty`` or ``NoConstraint``; see
            :mod:`lightning_modules.components.lipschitz`.
        n_critic: Critic steps per generator step (the generator steps when k mod n_critic = 0).
        lr_g, lr_d: Adam learning rates.
        betas_g, betas_d: Adam betas; (0, 0.9) as in WGAN-GP: momentum on a critic that changes
            every step destabilises the game.
        compile: ``none`` (eager), or a ``torch.compile`` mode for the step's losses
            (:mod:`lightning_modules.components.compilation`; a gradient penalty stays eager).
        seeds: Train a population, one member per seed, as one network
            (:mod:`lightning_modules.components.population`); unset: a single run.
        pack: Samples the critic judges at once (PacGAN's m: :mod:`lightning_modules.components.packing`).
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (2,),
        latent_dim: int = 2,
        noise: NoiseName = "normal",
        generator_hidden: Sequence[int] = (128,),
        critic_hidden: Sequence[int] = (128,),
        lipschitz: LipschitzStrategy = SpectralNormalization(),
        n_critic: int = 5,
        lr_g: float = 1e-4,
        lr_d: float = 1e-4,
        betas_g: tuple[float, float] = (0.0, 0.9),
        betas_d: tuple[float, float] = (0.0, 0.9),
        compile: CompileMode = "none",
        seeds: list[int] | None = None,
        pack: int = 1,
    ) -> None:
        super().__init__(WassersteinLoss(), latent_dim, n_critic, lr_g, lr_d, betas_g, betas_d, lipschitz, compile, seeds, pack)
        if noise not in ("normal", "uniform"):
            raise ConfigError(f"model.noise must be 'normal' or 'uniform', got {noise!r}.")
        if len(sample_shape) != 1:
            raise ConfigError(f"WGAN models vectors; data.sample_shape must have one dimension, got {tuple(sample_shape)}.")
        require_widths(generator_hidden=generator_hidden, critic_hidden=critic_hidden)
        if seeds is not None and isinstance(self.lipschitz, TorchSpectralNorm):
            raise ConfigError(
                "model.seeds: a population cannot stack TorchSpectralNorm's parametrizations; use SpectralNormalization."
            )
        self.save_hyperparameters()
        self.generator, self.discriminator = self.build_networks_per_member(self.build_networks)

    def build_networks(self) -> tuple[nn.Module, nn.Module]:
        """G and the critic, the critic prepared by the Lipschitz strategy: before the first step and before
        a checkpoint is loaded, since it may add buffers (power-iteration vectors) or parametrizations
        that the checkpoint holds."""
        hp = self.hparams
        generator = MLPGenerator(
            hp.latent_dim, hp.sample_shape, hp.generator_hidden, negative_slope=0.0, output_activation="none"
        )
        critic = MLPDiscriminator(packed_shape(hp.sample_shape, hp.pack), hp.critic_hidden, negative_slope=0.0, dropout=0.0)
        self.lipschitz.prepare(critic)
        return generator, critic

    def noise_distribution(self, device: torch.device) -> Distribution:
        zero, one = torch.zeros((), device=device), torch.ones((), device=device)
        if self.hparams.noise == "uniform":
            return Uniform(-one, one, validate_args=False)
        return Normal(zero, one, validate_args=False)

    def sample_latent(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        """Noise w from ``torch.distributions``; with ``rng``, reproducibly from its seed."""
        shape = (num_samples, self.latent_dim)
        if self.randomness is not None and rng is None:  # a population's members, each from its stream
            if self.hparams.noise == "uniform":  # as Uniform(-1, 1).sample: low + U[0, 1) * (high - low)
                return -1.0 + self.randomness.rand(*shape) * 2.0
            return self.randomness.randn(*shape)
        if rng is None:
            return self.noise_distribution(self.device).sample(shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.initial_seed())
            return self.noise_distribution(torch.device("cpu")).sample(shape).to(rng.device)
