"""Variational autoencoder (Kingma & Welling, 2014) on dynamically binarised MNIST.

Gaussian encoder q(z|x) = N(mu(x), diag sigma(x)^2), standard normal prior p(z), Bernoulli decoder
p(x|z) with logits f(z). Per batch of m grey images g in [0, 1] (``data.normalization: unit``)::

    x ~ Bernoulli(g)                                  # dynamic binarisation: a fresh draw every epoch
    mu, log sigma^2 = encoder(x)
    z = mu + sigma * eps,  eps ~ N(0, I)              # reparameterisation: gradients flow through z
    ELBO(x) = log p(x|z) - KL(q(z|x) || p(z))         # one-sample estimate; the KL in closed form
    descend -(1/m) sum_i [log p(x_i|z_i) - beta * KL_i]   (Adam; beta warms up 0 -> 1 if asked)

The test log-likelihood is the importance-weighted bound (Burda et al., 2016) with k samples,
``log p(x) >= E log (1/k) sum_j p(x, z_j) / q(z_j|x)``, which tightens as k grows (k = 5,000 for
reported numbers), on the test images binarised once with a fixed seed. With ``train_samples: k > 1`` that
bound is also the training objective: the IWAE::

    z_1..z_k = mu + sigma * eps_j                     # k reparameterised samples per image
    log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x)
    descend -(1/m) sum_i [logsumexp_j log w_ij - log k]   # gradient sum_j w~_j grad log w_j, w~ = softmax_j log w

Defaults are the IWAE
paper's one-stochastic-layer model: 2 x 200 tanh units, 50 latents. Configs:
``configs/vae_mnist.yaml`` (50 latents), ``configs/vae_mnist_2d.yaml`` (a 2-D latent map).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ConfigError
from lightning_modules.components.coding import EncoderDecoderModule
from lightning_modules.components.compilation import CompiledSteps, CompileMode
from lightning_modules.components.latents import standard_normal, standard_normal_log_prob
from lightning_modules.components.mlp import Activation, mlp, require_widths
from lightning_modules.components.population import PopulationMembers
from lightning_modules.components.step_logging import StepStatistics, gradient_norm, show_in_progress_bar
from lightning_modules.components.stored_network import load_stored_network

#: Seed of the one binarisation of the validation and test images (the likelihood protocol).
EVALUATION_BINARIZATION_SEED = 0

#: The IWAE paper's schedule (Burda et al. 2016; its code's experiments.py): stage i = 1..8 of 3^(i-1) epochs, ending
#: after epochs 1, 4, 13, 40, 121, 364, 1093 and 3,280.
IWAE_STAGE_ENDS = tuple(accumulate(3**stage for stage in range(8)))


def iwae_lr_factor(epoch: int) -> float:
    """The IWAE schedule's factor of the learning rate in 0-based ``epoch``: round(10^(1 - (i-1)/7), 1) / 10 in
    stage i, so 1e-3, 7.2e-4, 5.2e-4, ..., 1e-4 from lr 1e-3 (stage 8's after the schedule ends)."""
    stage = next((i for i, end in enumerate(IWAE_STAGE_ENDS) if epoch < end), len(IWAE_STAGE_ENDS) - 1)
    return round(10 ** (1 - stage / 7), 1) / 10


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per row, in closed form:
    1/2 sum (mu^2 + sigma^2 - log sigma^2 - 1)."""
    return 0.5 * (mu.square() + log_var.exp() - log_var - 1.0).sum(dim=-1)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | logits) summed over the pixels of each row (the last dimension)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def log_importance_weights(logits: Tensor, x: Tensor, z: Tensor, eps: Tensor, log_var: Tensor) -> Tensor:
    """``log w = log p(x|z) + log p(z) - log q(z|x)`` of each sample ``z = mu + sigma * eps`` decoded to ``logits``
    (the last dimension summed), log q written with eps: ``z - mu = sigma * eps``."""
    log_prior = standard_normal_log_prob(z)
    log_posterior = standard_normal_log_prob(eps) - 0.5 * log_var.sum(-1)
    return bernoulli_log_likelihood(logits, x.expand_as(logits)) + log_prior - log_posterior


def reparameterize(mu: Tensor, log_var: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (drawn here unless given): a sample of N(mu, sigma^2)
    through which gradients reach mu and sigma (the reparameterisation trick)."""
    return mu + (0.5 * log_var).exp() * (torch.randn_like(mu) if eps is None else eps)


def binarize(images: Tensor, rng: torch.Generator | None = None) -> Tensor:
    """Each grey pixel g in [0, 1] becomes 1 with probability g."""
    return torch.bernoulli(images, generator=rng)


class VAE(PopulationMembers, StepStatistics, EncoderDecoderModule):
    """VAE with MLP encoder and decoder.

    Logs per epoch ``train/elbo``, ``train/reconstruction`` (E log p(x|z)), ``train/kl``,
    ``val/elbo`` (nats per image, higher is better) and ``kl_weight``; ``test/elbo`` and
    ``test/nll`` (= minus the k-sample importance-weighted bound, nats per image, lower is better).

    Args:
        sample_shape: (C, H, W); linked from ``data.sample_shape`` by the CLI.
        latent_dim: Size of z (``code_size`` of the latent-space callbacks).
        hidden: Hidden widths of the encoder; the decoder mirrors them.
        activation: Hidden activation (``tanh`` as in the IWAE paper).
        lr: Adam learning rate.
        anneal_lr: Cosine-anneal the learning rate to 0 over the run (per step; needs trainer.max_epochs or max_steps).
        kl_warmup_epochs: The KL weight beta rises linearly from 0 to 1 over this many epochs (0: always 1),
            which keeps latents from being switched off early. The ELBO is logged with beta = 1.
        train_samples: k of the training objective: 1, the ELBO (a VAE); k > 1, the k-sample importance-weighted
            bound (an IWAE; ``train/bound`` besides the one-sample ``train/elbo`` of its first sample).
        adam_eps: Adam's epsilon. The IWAE paper's 1e-4 is on a batch *sum*; on genlab's batch mean of m images
            the same updates take 1e-4 / m (5e-6 at batch 20).
        iwae_schedule: The IWAE paper's learning-rate schedule over epochs (:data:`IWAE_STAGE_ENDS`, from ``lr``);
            off: a constant ``lr`` (or ``anneal_lr``).
        test_samples: k of the importance-weighted test bound (5,000 for reported numbers).
        test_chunk: Importance samples decoded at a time (bounds the memory of the test step).
        compile: ``none`` (eager), or a ``torch.compile`` mode for the training ELBO
            (:mod:`lightning_modules.components.compilation`).
        seeds: Train a population, one member per seed, as one network
            (:mod:`lightning_modules.components.population`): each member's binarisation and
            reparameterisation noise from its own stream; unset: a single run.
    """

    #: What the run's summary says of the test metrics (callbacks.TestSplitMetrics).
    test_metric_units: ClassVar[dict[str, str]] = {
        "nll": " nats per image (importance-weighted, k = model.test_samples; the IWAE paper's VAE: 86.76 after 3,280 passes)"
    }

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 50,
        hidden: Sequence[int] = (200, 200),
        activation: Activation = "tanh",
        lr: float = 1e-3,
        anneal_lr: bool = False,
        kl_warmup_epochs: int = 0,
        train_samples: int = 1,
        adam_eps: float = 1e-8,
        iwae_schedule: bool = False,
        test_samples: int = 100,
        test_chunk: int = 100,
        compile: CompileMode = "none",
        seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.init_population(seeds)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be an integer >= 1, got {latent_dim!r}.")
        if test_samples < 1 or test_chunk < 1:
            raise ConfigError(
                "model.test_samples and model.test_chunk must be >= 1 (k importance samples), "
                f"got {test_samples!r} and {test_chunk!r}."
            )
        if kl_warmup_epochs < 0 or not lr > 0:
            raise ConfigError(f"model.kl_warmup_epochs must be >= 0 and model.lr > 0, got {kl_warmup_epochs!r} and {lr!r}.")
        if isinstance(train_samples, bool) or not isinstance(train_samples, int) or train_samples < 1:
            raise ConfigError(f"model.train_samples must be an integer >= 1 (1: the ELBO), got {train_samples!r}.")
        if train_samples > 1 and kl_warmup_epochs:
            raise ConfigError(
                "model.kl_warmup_epochs weights the ELBO's KL term, which the k-sample bound does not have: set it to 0."
            )
        if iwae_schedule and anneal_lr or not adam_eps > 0:
            raise ConfigError(
                f"model.iwae_schedule and model.anneal_lr are two schedules (choose one), and model.adam_eps must be > 0, "
                f"got {iwae_schedule!r}, {anneal_lr!r} and {adam_eps!r}."
            )
        require_widths(hidden=hidden)
        self.save_hyperparameters()
        self.code_size = latent_dim
        self.sample_shape = tuple(sample_shape)
        pixels = math.prod(self.sample_shape)
        self.encoder, self.decoder = self.build_networks_per_member(
            lambda: (mlp(pixels, hidden, 2 * latent_dim, activation), mlp(latent_dim, list(reversed(hidden)), pixels, activation))
        )
        self.compiled = CompiledSteps(compile)
        # Epoch means summed on the device (StepStatistics), not self.log per step: at batch 20 three self.log calls
        # a step cost more than the step's maths, and a population's would multiply them by P + 1.
        self.track_statistics(self.training_terms, members=self.members, member_mean=self.alive_mean)

    #: The epoch means keep the names they had before StepStatistics (``train/elbo``); no step values.
    STEP_LOG_KEY = None
    EPOCH_LOG_KEY = "train/{name}"

    @property
    def training_terms(self) -> tuple[str, ...]:
        """What a training step measures: the ELBO's terms, and an IWAE's bound."""
        return ("elbo", "reconstruction", "kl") + (("bound",) if self.hparams.train_samples > 1 else ())

    @property
    def logged_metric_names(self) -> set[str]:
        """The epoch metrics this module logs: what a learning-curve panel may name."""
        return {f"train/{name}" for name in self.training_terms} | {"val/elbo", "kl_weight", "test/elbo", "test/nll"}

    # --- the interface of the latent-space and sample callbacks --------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """mu and log sigma^2 of q(z|x)."""
        return self.encoder(self.flat(x)).chunk(2, dim=-1)

    def flat(self, x: Tensor) -> Tensor:
        """Images (or pixel rows) as pixel rows, a population's member dimension kept."""
        return x.reshape(*x.shape[: self.batch_dims], -1)

    def encode(self, images: Tensor) -> Tensor:
        """The posterior mean: where the encoder places an image."""
        return self.posterior(images)[0]

    def decode(self, codes: Tensor) -> Tensor:
        """The decoder's pixel probabilities, as images in [0, 1]."""
        return torch.sigmoid(self.decoder(codes)).reshape(*codes.shape[:-1], *self.sample_shape)

    def sample_prior(self, num_samples: int, rng: torch.Generator | None = None) -> Tensor:
        return standard_normal(num_samples, self.code_size, self.device, rng)

    def fixed_inputs(self, num_samples: int, rng: torch.Generator) -> tuple[Tensor, None]:
        return self.sample_prior(num_samples, rng), None

    def generate(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.decode(z)

    # --- the algorithm -------------------------------------------------------------------------
    def elbo(self, x: Tensor) -> dict[str, Tensor]:
        """One-sample ELBO of each binary image in ``x`` and its two terms."""
        mu, log_var = self.posterior(x)
        eps = self.randomness.randn(*mu.shape[1:], dtype=mu.dtype) if self.training and self.randomness else None
        reconstruction = bernoulli_log_likelihood(self.decoder(reparameterize(mu, log_var, eps)), self.flat(x))
        kl = gaussian_kl(mu, log_var)
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def importance_weighted_bound(self, x: Tensor, samples: int) -> Tensor:
        """log (1/k) sum_j p(x, z_j) / q(z_j|x), z_j ~ q(z|x), per image: a lower bound of log p(x)
        that tightens as k grows; computed ``test_chunk`` samples at a time with a running logsumexp."""
        mu, log_var = self.posterior(x)
        target = x.flatten(1)
        total = torch.full((len(x),), -math.inf, device=x.device)
        for start in range(0, samples, self.hparams.test_chunk):
            k = min(self.hparams.test_chunk, samples - start)
            eps = torch.randn(k, *mu.shape, device=x.device)
            z = reparameterize(mu, log_var, eps)  # (k, batch, latent)
            log_weights = log_importance_weights(self.decoder(z), target, z, eps, log_var)
            total = torch.logaddexp(total, log_weights.logsumexp(dim=0))
        return total - math.log(samples)

    def importance_weighted_terms(self, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """The training objective of an IWAE per image: ``bound`` = log (1/k) sum_j w_j over ``train_samples`` = k
        samples (``eps``: ``(..., k, m, latent)``, drawn here unless given), and the one-sample ELBO's terms of the
        first sample (closed-form KL), what ``train/elbo`` shows for a VAE."""
        mu, log_var = self.posterior(x)  # (..., m, latent)
        if eps is None:
            shape = (*mu.shape[:-2], self.hparams.train_samples, *mu.shape[-2:])
            if self.training and self.randomness is not None:  # each member from its own stream
                eps = self.randomness.randn(*shape[1:], dtype=mu.dtype)
            else:
                eps = torch.randn(shape, device=mu.device, dtype=mu.dtype)
        z = reparameterize(mu.unsqueeze(-3), log_var.unsqueeze(-3), eps)  # (..., k, m, latent)
        logits = self.decoder(z.flatten(-3, -2)).unflatten(-2, z.shape[-3:-1])  # a population's layers take (P, rows, in)
        target = self.flat(x).unsqueeze(-3)
        log_weights = log_importance_weights(logits, target, z, eps, log_var.unsqueeze(-3))  # (..., k, m)
        reconstruction, kl = bernoulli_log_likelihood(logits[..., 0, :, :], self.flat(x)), gaussian_kl(mu, log_var)
        bound = log_weights.logsumexp(dim=-2) - math.log(eps.shape[-3])
        return {"bound": bound, "elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def mean_training_terms(self, x: Tensor) -> dict[str, Tensor]:
        """The ELBO and its two terms (and an IWAE's bound), each a mean over the batch: the training step's maths."""
        terms = self.elbo(x) if self.hparams.train_samples == 1 else self.importance_weighted_terms(x)
        return {name: value.mean(-1) for name, value in terms.items()}

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_epochs
        return 1.0 if warmup == 0 else min(1.0, (self.current_epoch + 1) / warmup)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, _ = batch
        batch_size = images.shape[self.batch_dims - 1]
        binary = binarize(images) if self.randomness is None else self.randomness.each(lambda p, rng: binarize(images[p], rng))
        terms = self.compiled(self.mean_training_terms)(binary)
        loss = -terms["bound"] if "bound" in terms else -(terms["reconstruction"] - self.kl_weight() * terms["kl"])
        self.log_stats([{name: value.detach() for name, value in terms.items()}], batch_size)
        if self.members is None:
            show_in_progress_bar(self, {"elbo": terms["elbo"]})
            return loss
        show_in_progress_bar(self, {"elbo": self.alive_mean(terms["elbo"])})
        # A population's losses, one per member, summed: member p's gradient sees only its own. A member whose
        # loss is not finite is left out of the sum (the NaN guard reads it) and frozen before the step.
        self.member_losses = loss.detach()
        return torch.where(self.members_alive & loss.isfinite(), loss, 0.0).sum()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        # Once an epoch (it is constant within one), a fill on the device: the Python number would be copied there.
        self.log("kl_weight", torch.full((), self.kl_weight(), device=self.device), on_step=False, on_epoch=True)

    def adam_settings(self) -> dict[str, Any]:
        return {"lr": self.hparams.lr, "eps": self.hparams.adam_eps}

    def epoch_lr_factor(self) -> Callable[[int], float] | None:
        return iwae_lr_factor if self.hparams.iwae_schedule else None

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        if self.members is not None:
            self.freeze_diverged(optimizer, self.member_losses, gradient_norm(optimizer, self.members))

    def fixed_binarization(self, images: Tensor, batch_idx: int) -> Tensor:
        """The evaluation images binarised once: the same draw in every epoch and every run (and, for a
        population, the same images for every member)."""
        rng = torch.Generator(images.device).manual_seed(EVALUATION_BINARIZATION_SEED * 1_000_003 + batch_idx)
        x = binarize(images, rng)
        return x if self.members is None else x.expand(self.members, *x.shape)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, _ = batch
        elbo = self.elbo(self.fixed_binarization(images, batch_idx))["elbo"].mean(-1)
        self.log_per_member({"val/elbo": elbo}, batch_size=len(images), sync_dist=True)

    def test_metrics(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``elbo`` and ``nll`` (minus the ``test_samples``-sample bound) of one test batch, in nats per image."""
        if self.members is not None:
            raise ConfigError(
                "the test bound of a VAE population is not measured in the population: export a member "
                "(python -m cli.export member CKPT P) and test it as a single run."
            )
        x = self.fixed_binarization(batch[0], batch_idx)
        return {"elbo": self.elbo(x)["elbo"].mean(), "nll": -self.importance_weighted_bound(x, self.hparams.test_samples).mean()}


class PosteriorMean(nn.Module):
    """A VAE's encoder on its own: ``[0, 1]`` images in, posterior means out. Frozen, in eval mode."""

    def __init__(self, sample_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], activation: Activation) -> None:
        super().__init__()
        self.num_features = latent_dim
        self.encoder = mlp(math.prod(sample_shape), hidden, 2 * latent_dim, activation)

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images.flatten(1).float())[:, : self.num_features]


def load_encoder(path: str | Path) -> tuple[PosteriorMean, dict[str, Any]]:
    """The encoder stored by ``python -m cli.export encoder``, frozen, and the file's metadata."""
    return load_stored_network(
        path,
        PosteriorMean,
        "VAE encoder file",
        "store one with `python -m cli.export encoder runs/<vae run>/checkpoints/last.ckpt`, "
        "or restore the stored one with `git checkout -- pretrained/`",
        weights_of=lambda network: network.encoder,
    )
