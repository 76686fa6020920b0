"""2-D mixtures of Gaussians for the WGAN experiments, as a fixed empirical sample.

The training objective's expectation over the data is estimated on a *fixed* set of ``num_samples``
points drawn once from the mixture (seeded), as in the homework; batches are drawn from that set
with the same in-memory, DDP-sharded loader as the image datamodules. Each point's label is the
index of the mixture component it came from.

Presets from the mode-collapse literature (PacGAN, Lin et al. 2018):

- :class:`Ring8DataModule`: 8 modes evenly spaced on the unit circle, std 0.01;
- :class:`Grid25DataModule`: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.distributions import Categorical

from core.errors import DataConfigError
from datamodules.loaders import EpochShardSampler, InMemoryBatches, require_a_training_batch
from datamodules.population import PopulationBatches, data_order_seed


class GaussianMixtureDataModule(L.LightningDataModule):
    """A mixture of 2-D Gaussians with configurable means, covariances and weights.

    Args:
        means: One ``[x, y]`` per component.
        covariances: One 2x2 covariance per component; default: ``std**2 * I`` for every component.
        std: Isotropic standard deviation used when ``covariances`` is not given.
        weights: Mixture weights (normalised); default: uniform.
        num_samples: Size of the fixed empirical training sample.
        batch_size: Points per batch per process.
        sample_seed: Seed of the empirical sample (fixed across training seeds).
        shuffle_seed: Seed of the per-epoch batch order (combined with the epoch number).
        minibatches_per_step: Batches handed to the model per training step (as a list), each
            still one critic update: the same updates in the same order, with Lightning's per-step
            work paid once per group. ``n_critic`` makes one training step one WGAN iteration.
        scale: Multiplies every mean and standard deviation: the same mixture in other units (the WGAN-GP toy
            divides its grid of 25 by 2.828 and its ring by 1.414); metrics in units of the modes' std are unchanged.
        population_seeds: Serve a population of runs (linked from ``model.init_args.seeds`` by the CLI):
            per step the next batch of every seed's data order, stacked ``(P, m, 2)``; the points are the
            same for every member (``sample_seed``).
    """

    #: Shape of one data point.
    sample_shape = (2,)

    def __init__(
        self,
        means: Sequence[Sequence[float]] = ((-1.0, 0.0), (1.0, 0.0)),
        covariances: Sequence[Sequence[Sequence[float]]] | None = None,
        std: float = 0.1,
        weights: Sequence[float] | None = None,
        num_samples: int = 10_000,
        batch_size: int = 256,
        sample_seed: int = 0,
        shuffle_seed: int = 0,
        minibatches_per_step: int = 1,
        scale: float = 1.0,
        population_seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        if population_seeds is not None and minibatches_per_step != 1:
            raise DataConfigError("data.minibatches_per_step must be 1 for a population (model.seeds); its steps are stacked.")
        self.means = torch.tensor(means, dtype=torch.float32)
        if self.means.dim() != 2 or self.means.shape[1] != 2:
            raise DataConfigError(f"data.means must be a list of [x, y] pairs, got shape {tuple(self.means.shape)}.")
        k = len(self.means)
        if covariances is None:
            if not std > 0:
                raise DataConfigError(f"data.std must be > 0, got {std!r}.")
            self.covariances = torch.eye(2).repeat(k, 1, 1) * std**2
        else:
            self.covariances = torch.tensor(covariances, dtype=torch.float32)
            if self.covariances.shape != (k, 2, 2):
                raise DataConfigError(
                    f"data.covariances must hold one 2x2 matrix per mean ({k}), got shape {tuple(self.covariances.shape)}."
                )
            if not bool((torch.linalg.eigvalsh(self.covariances) > 0).all()):
                raise DataConfigError("data.covariances must be symmetric positive definite.")
        self.weights = torch.full((k,), 1.0 / k) if weights is None else torch.tensor(weights, dtype=torch.float32)
        if self.weights.shape != (k,) or bool((self.weights < 0).any()) or not self.weights.sum() > 0:
            raise DataConfigError(f"data.weights must be {k} non-negative numbers, got {weights!r}.")
        self.weights = self.weights / self.weights.sum()
        if not scale > 0:
            raise DataConfigError(f"data.scale must be > 0, got {scale!r}.")
        self.means, self.covariances = self.means * scale, self.covariances * scale**2
        if num_samples <= 0 or batch_size <= 0:
            raise DataConfigError(f"data.num_samples and data.batch_size must be positive, got {num_samples} and {batch_size}.")
        if minibatches_per_step < 1:
            raise DataConfigError(
                f"data.minibatches_per_step must be >= 1 (1 = one minibatch per training step), got {minibatches_per_step}."
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.minibatches_per_step = minibatches_per_step
        self.sample_seed, self.shuffle_seed = sample_seed, shuffle_seed
        self.population_seeds = population_seeds
        self.points: Tensor | None = None

    @property
    def num_modes(self) -> int:
        return len(self.means)

    @property
    def mode_stds(self) -> Tensor:
        """Per-component standard deviation (largest axis), the unit of "high quality" distance."""
        return torch.linalg.eigvalsh(self.covariances)[:, -1].sqrt()

    def sample(self, num_samples: int, seed: int) -> tuple[Tensor, Tensor]:
        """``num_samples`` fresh points of the mixture and their components, from ``seed`` alone
        (the global RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            components = Categorical(probs=self.weights).sample((num_samples,))
            noise = torch.randn(num_samples, 2)
        # x = mean_k + L_k eps with L_k L_k^T = Sigma_k
        chol = torch.linalg.cholesky(self.covariances)
        return self.means[components] + torch.einsum("nij,nj->ni", chol[components], noise), components

    def setup(self, stage: str) -> None:
        if self.points is None:
            self.points, self.labels = self.sample(self.num_samples, self.sample_seed)
        if stage == "fit":
            require_a_training_batch(self.num_samples, self.batch_size, 1 if self.trainer is None else self.trainer.world_size)

    def train_dataloader(self) -> InMemoryBatches | PopulationBatches:
        rank, world_size = (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)

        def batches(shuffle_seed: int) -> InMemoryBatches:
            sampler = EpochShardSampler(self.num_samples, True, shuffle_seed, rank, world_size, pad=False)
            group = self.minibatches_per_step
            return InMemoryBatches(self.points, self.labels, self.batch_size, sampler, drop_last=True, minibatches_per_step=group)

        if self.population_seeds is not None:
            return PopulationBatches([batches(data_order_seed(self.shuffle_seed, seed)) for seed in self.population_seeds])
        return batches(self.shuffle_seed)


class Ring8DataModule(GaussianMixtureDataModule):
    """8 modes on the unit circle, std 0.01 (PacGAN's "2D-ring")."""

    def __init__(self, std: float = 0.01, **kwargs) -> None:
        angles = [2 * math.pi * i / 8 for i in range(8)]
        super().__init__(means=[(math.cos(a), math.sin(a)) for a in angles], std=std, **kwargs)


class Grid25DataModule(GaussianMixtureDataModule):
    """25 modes on the grid {-4, -2, 0, 2, 4}^2, std 0.05 (PacGAN's "2D-grid")."""

    def __init__(self, std: float = 0.05, **kwargs) -> None:
        super().__init__(means=[(x, y) for x in range(-4, 5, 2) for y in range(-4, 5, 2)], std=std, **kwargs)
