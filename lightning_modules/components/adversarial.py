"""The adversarial training step, written once for every GAN-like experiment in genlab.

One training batch = one discriminator (critic) update on that batch of real samples and a batch of
fresh fakes; after every ``n_critic``-th discriminator update, one generator update on fresh noise.
So with ``n_critic = k`` each generator step follows k discriminator steps, each of which saw its
own m real samples — Algorithm 1 of Goodfellow et al. (2014), and the critic schedule of WGAN.

What varies between experiments is plugged in, not copied:

- the networks and what they are fed (:meth:`generate`, :meth:`score`; conditional models use the
  labels, unconditional ones ignore them);
- the loss pair (an object with ``discriminator``, ``generator`` and ``diagnostics`` methods,
  e.g. :mod:`lightning_modules.components.losses`);
- the schedule (``n_critic``) and the two Adam optimizers' settings;
- how the critic is kept Lipschitz (a strategy from :mod:`lightning_modules.components.lipschitz`:
  a penalty added to its loss and/or a constraint applied after its step);
- how many samples D judges at once (``pack``, PacGAN: :mod:`lightning_modules.components.packing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from core.batches import is_minibatch_group
from core.errors import ConfigError
from lightning_modules.components.compilation import CompiledSteps, CompileMode
from lightning_modules.components.fused_adam import fused_adam
from lightning_modules.components.latents import standard_normal
from lightning_modules.components.lipschitz import LipschitzStrategy, NoConstraint
from lightning_modules.components.packing import pack_samples, require_pack
from lightning_modules.components.population import PopulationMembers
from lightning_modules.components.step_logging import StepStatistics, gradient_norm

#: Layers whose output depends on the whole batch: a critic holding one scores real and fake apart.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

#: ``(samples, labels)``: the data of one discriminator update.
Minibatch = tuple[Tensor, Tensor]


class AdversarialModule(PopulationMembers, StepStatistics, L.LightningModule):
    """Manual-optimization loop of a generator ``G`` against a discriminator / critic ``D``.

    Subclasses set ``self.generator`` and ``self.discriminator`` (built for inputs of
    :func:`~lightning_modules.components.packing.packed_shape`) and may override :meth:`generate`,
    :meth:`score_packs` and :meth:`fixed_inputs`; the training loop itself stays here.

    Logged by :class:`~lightning_modules.components.step_logging.StepStatistics`, every step
    (``train/<name>_step``, this rank's value) and every epoch (``train/<name>_epoch``, mean over
    steps and ranks): ``d_loss``, ``g_loss``, the loss's diagnostics (for the GAN loss: ``d_real``
    = mean D(x), ``d_fake`` = mean D(G(z))), and the gradient norms ``d_grad_norm`` and
    ``g_grad_norm`` measured before each optimizer step.
    """

    generator: nn.Module
    discriminator: nn.Module
    #: ``training_step`` takes a list of minibatches too (``data.minibatches_per_step``).
    accepts_minibatch_groups = True
    #: A member's view (``member_view``) counts critic iterations as the population does.
    MEMBER_VIEW_ATTRIBUTES = ("critic_updates",)

    def __init__(
        self,
        adversarial_loss: Any,
        latent_dim: int,
        n_critic: int,
        lr_g: float,
        lr_d: float,
        betas_g: tuple[float, float],
        betas_d: tuple[float, float],
        lipschitz: LipschitzStrategy | None = None,
        compile: CompileMode = "none",
        seeds: Sequence[int] | None = None,
        pack: int = 1,
    ) -> None:
        super().__init__()
        require_pack(pack)
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ConfigError(
                f"model.n_critic (discriminator steps per generator step) must be an integer >= 1, got {n_critic!r}."
            )
        for key, value in (("lr_g", lr_g), ("lr_d", lr_d), ("latent_dim", latent_dim)):
            if not value > 0:
                raise ConfigError(f"model.{key} must be > 0, got {value!r}.")
        for key, betas in (("betas_g", betas_g), ("betas_d", betas_d)):
            if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
                raise ConfigError(f"model.{key} must be two Adam betas in [0, 1), got {list(betas)!r}.")
        self.automatic_optimization = False
        self.adversarial_loss = adversarial_loss
        self.latent_dim = latent_dim
        self.n_critic = n_critic
        #: Samples per discriminator input (PacGAN's m; 1: one sample per score).
        self.pack = pack
        self.adam_g = {"lr": lr_g, "betas": tuple(betas_g)}
        self.adam_d = {"lr": lr_d, "betas": tuple(betas_d)}
        self.lipschitz = lipschitz or NoConstraint()
        #: How the step's maths runs: eager, or captured by ``torch.compile`` (``model.compile``).
        self.compiled = CompiledSteps(compile)
        #: Discriminator updates so far; decides when the generator steps. Checkpointed.
        self.critic_updates = 0
        #: ``model.seeds``: a population of runs, one per seed, trained as one (components/population.py).
        self.init_population(seeds)
        penalty_names = ("d_penalty",) if self.lipschitz.has_penalty else ()
        self.track_statistics(
            ("d_loss", *penalty_names, "d_grad_norm", *adversarial_loss.diagnostic_names, "g_loss", "g_grad_norm"),
            in_progress_bar=("d_loss", "g_loss"),
            members=self.members,
            member_mean=self.alive_mean,
        )

    # --- what an experiment may redefine -------------------------------------------------------
    def sample_latent(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        """Standard normal latents, on ``rng``'s device if one is given, else on the model's; a
        population's training latents ``(P, m, latent)`` from each member's stream."""
        if self.randomness is not None and rng is None:
            return self.randomness.randn(num_samples, self.latent_dim)
        return standard_normal(num_samples, self.latent_dim, self.device, rng)

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """G(z); conditional models also use ``labels``."""
        return self.generator(z)

    def score(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """D's raw score (logit or critic value) per pack of ``pack`` consecutive images (per image for 1)."""
        return self.score_packs(self.packed(images), labels)

    def score_packs(self, packs: Tensor, labels: Tensor | None) -> Tensor:
        """D on its inputs, packs already formed; conditional models also use ``labels``."""
        return self.discriminator(packs)

    #: What :meth:`landscape` gives, for the figure's colour bar, and how far below its top the colours reach
    #: (``None``: the whole range; a critic has no far tail).
    landscape_label = "critic"
    landscape_span: float | None = None

    def landscape(self, points: Tensor) -> Tensor:
        """D's score of each point, the background of ``callbacks.CriticLandscape`` (a packing D sees each point
        as a pack of m copies of itself)."""
        return self.score(points.repeat_interleave(self.pack, dim=0), None)

    def packed(self, samples: Tensor) -> Tensor:
        """``(..., n, *sample) -> (..., n / pack, *packed sample)`` (unchanged for ``pack`` 1)."""
        return pack_samples(samples, self.pack, self.batch_dims - 1)

    def fixed_inputs(self, num_samples: int, rng: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """What the sample callbacks (grid, quality metrics) generate from, the same for the same
        seed: latents and, for conditional models, labels."""
        return self.sample_latent(num_samples, rng), None

    # --- the algorithm -------------------------------------------------------------------------
    def training_step(self, batch: Minibatch | list[Minibatch], batch_idx: int) -> dict[str, Tensor]:
        """One discriminator update per minibatch ``(real, labels)``, and the generator's after every
        ``n_critic``-th. ``batch`` is one minibatch or, from a datamodule with ``minibatches_per_step``,
        a list of them: the same updates, with Lightning's per-step work paid once per list."""
        minibatches = batch if is_minibatch_group(batch) else [batch]
        opt_g, opt_d = self.optimizers()
        updates = []
        batch_size = minibatches[0][0].shape[self.batch_dims - 1]  # m: a population's batch is (P, m, ...)
        for real, labels in minibatches:
            stats = self.discriminator_step(real, labels, opt_d)
            self.critic_updates += 1
            if self.critic_updates % self.n_critic == 0:  # the k-schedule: G steps after every n_critic-th D step
                stats |= self.generator_step(batch_size, labels, opt_g)
            updates.append(stats)
        stats = self.log_stats(updates, batch_size=batch_size)
        # The losses the NaN guard reads: a population's over the members alive, non-finite once none is.
        losses = {name: stats[name] for name in ("d_loss", "g_loss") if name in stats}
        return losses if self.members is None else {name: self.alive_mean(value) for name, value in losses.items()}

    def discriminator_step(self, real: Tensor, labels: Tensor, optimizer: Optimizer) -> dict[str, Tensor]:
        """One descent step of D's loss on m real samples and m fakes from fresh noise."""
        batch_size = real.shape[self.batch_dims - 1]
        d_loss, fake, diagnostics = self.compiled(self.discriminator_loss)(real, self.sample_latent(batch_size), labels)
        stats = {}
        if self.lipschitz.has_penalty:
            rand = None if self.randomness is None else lambda *shape, **_: self.randomness.rand(*shape[1:], dtype=real.dtype)
            # D's Lipschitz constant is that of its input, a pack: the penalty interpolates and differentiates packs.
            penalty = self.lipschitz.penalty(
                lambda x: self.score_packs(x, labels), self.packed(real), self.packed(fake), rand, self.batch_dims,
                critic=self.discriminator,
            )  # fmt: skip
            d_loss = d_loss + penalty
            stats["d_penalty"] = penalty.detach()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(d_loss.sum())  # a population's losses, one per member: member p's gradient sees only its own
        d_grad_norm = gradient_norm(optimizer, self.members)
        self.freeze_diverged(optimizer, d_loss.detach(), d_grad_norm)  # a population's diverged members
        optimizer.step()
        self.lipschitz.after_step(self.discriminator)
        return {"d_loss": d_loss.detach(), **stats, "d_grad_norm": d_grad_norm, **diagnostics}

    def generator_step(self, batch_size: int, labels: Tensor, optimizer: Optimizer) -> dict[str, Tensor]:
        """One descent step of G's loss on fresh noise, through D (whose parameters stay untouched)."""
        self.toggle_optimizer(optimizer)
        g_loss = self.compiled(self.generator_loss)(self.sample_latent(batch_size), labels)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(g_loss.sum())
        g_grad_norm = gradient_norm(optimizer, self.members)
        self.freeze_diverged(optimizer, g_loss.detach(), g_grad_norm)
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        return {"g_loss": g_loss.detach(), "g_grad_norm": g_grad_norm}

    def discriminator_loss(self, real: Tensor, z: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """D's loss on ``real`` and on the fakes G makes of ``z``, the fakes, and the loss's diagnostics.
        G is frozen by generating under ``no_grad`` (no graph at all), so unlike the generator step
        this one needs no ``toggle_optimizer``."""
        with torch.no_grad():
            fake = self.generate(z, labels)
        real_scores, fake_scores = self.score_real_and_fake(real, fake, labels)
        d_loss = self.adversarial_loss.discriminator(real_scores, fake_scores)
        return d_loss, fake, self.adversarial_loss.diagnostics(real_scores.detach(), fake_scores.detach())

    def generator_loss(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """G's loss on the fakes it makes of ``z``, as D scores them."""
        return self.adversarial_loss.generator(self.score(self.generate(z, labels), labels))

    def score_real_and_fake(self, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """D on the real and the fake samples: one pass over both (half the kernel launches, matmuls
        twice as tall), unless D keeps batch statistics, which one pass would mix."""
        if not self.scores_jointly:
            return self.score(real, labels), self.score(fake, labels)
        samples = self.batch_dims - 1  # the dimension of the samples: 1 in a population's (P, m, ...)
        both_labels = None if labels is None else torch.cat([labels, labels], dim=samples)
        scores = self.score(torch.cat([real, fake], dim=samples), both_labels)
        return scores.split(real.shape[samples] // self.pack, dim=samples)  # packs never mix real and fake: pack divides m

    @cached_property
    def scores_jointly(self) -> bool:
        return not any(isinstance(module, BATCH_NORMS) for module in self.discriminator.modules())

    def setup(self, stage: str) -> None:
        require_pack(self.pack, getattr(getattr(self.trainer, "datamodule", None), "batch_size", None))

    def configure_optimizers(self) -> list[Optimizer]:
        """Adam for G, Adam for D (in that order: ``opt_g, opt_d = self.optimizers()``)."""
        return [
            fused_adam(self.generator.parameters(), self.device, **self.adam_g),
            fused_adam(self.discriminator.parameters(), self.device, **self.adam_d),
        ]

    # --- checkpointed state ---------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["critic_updates"] = self.critic_updates

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.critic_updates = checkpoint["critic_updates"]
