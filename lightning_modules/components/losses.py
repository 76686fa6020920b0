"""Adversarial loss pairs: what the discriminator (critic) and the generator each minimise.

Every loss takes raw scores (logits for the classic GAN), never probabilities: ``log D`` is computed
as ``-softplus(-logit)`` and ``log(1 - D)`` as ``-softplus(logit)``, which stay finite where
``log(sigmoid(logit))`` underflows to ``-inf``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor


class GANLoss(ABC):
    """Goodfellow et al. (2014): D ascends ``mean log D(x) + mean log(1 - D(G(z)))``.

    Subclasses differ only in the generator's objective; a config chooses one by class
    (``--model.init_args.loss SaturatingGANLoss``).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A model built in Python keeps its loss object in its hyperparameters: let checkpoints load it.
        torch.serialization.add_safe_globals([cls])

    #: Keys of :meth:`diagnostics`, logged every step by the adversarial module.
    diagnostic_names = ("d_real", "d_fake")

    # Every mean is over the last dimension, the samples: scores ``(m,)`` give one number, a
    # population's ``(P, m)`` one per member (lightning_modules.components.population).

    def discriminator(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """``-[mean log D(x) + mean log(1 - D(G(z)))]``, the quantity D descends."""
        return F.softplus(-real_logits).mean(-1) + F.softplus(fake_logits).mean(-1)

    @abstractmethod
    def generator(self, fake_logits: Tensor) -> Tensor:
        """The quantity G descends."""

    def diagnostics(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """Mean D(x) and mean D(G(z)): D's confidence on real and on generated samples."""
        return {"d_real": real_logits.sigmoid().mean(-1), "d_fake": fake_logits.sigmoid().mean(-1)}


class SaturatingGANLoss(GANLoss):
    """The original minimax generator: descend ``mean log(1 - D(G(z)))``.

    Its gradient w.r.t. the logit is ``-D(G(z))``: once D confidently rejects the samples
    (``D(G(z)) -> 0``, typical early in training) the generator stops receiving a signal.
    """

    def generator(self, fake_logits: Tensor) -> Tensor:
        return -F.softplus(fake_logits).mean(-1)


class NonSaturatingGANLoss(GANLoss):
    """The "-log D trick": ascend ``mean log D(G(z))``, i.e. descend ``mean softplus(-logit)``.

    Same fixed point as the minimax game, but the logit gradient ``D(G(z)) - 1`` is largest exactly
    when the generator is worst.
    """

    def generator(self, fake_logits: Tensor) -> Tensor:
        return F.softplus(-fake_logits).mean(-1)


class WassersteinLoss:
    """Arjovsky et al. (2017): the critic ascends ``E[d(real)] - E[d(fake)]``, an estimate of the
    Wasserstein-1 distance when d is 1-Lipschitz (see :mod:`lightning_modules.components.lipschitz`);
    the generator descends ``-E[d(fake)]``. Scores are unbounded critic values, not logits."""

    diagnostic_names = ("critic_real", "critic_fake", "wasserstein_estimate")

    def discriminator(self, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
        return fake_scores.mean(-1) - real_scores.mean(-1)

    def generator(self, fake_scores: Tensor) -> Tensor:
        return -fake_scores.mean(-1)

    def diagnostics(self, real_scores: Tensor, fake_scores: Tensor) -> dict[str, Tensor]:
        real, fake = real_scores.mean(-1), fake_scores.mean(-1)
        return {"critic_real": real, "critic_fake": fake, "wasserstein_estimate": real - fake}
