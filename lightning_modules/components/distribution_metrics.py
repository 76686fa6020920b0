"""Sample-quality metrics for low-dimensional distributions (the 2-D WGAN experiments), and
precision, recall, density and coverage on feature vectors (the image GANs, callbacks.SampleQuality).

Mode metrics follow PacGAN (Lin et al., 2018): every generated sample is assigned to its nearest
mode; it is *high quality* if it lies within ``3 * std`` of that mode; PacGAN's code counts a mode as
*captured* when one high-quality sample lands on it (``modes_reached``; its ``mode_coverage``), genlab's WGAN
tables when ``min_count`` do (``modes``); the *reverse KL* compares the histogram of the high-quality samples
over the modes with the true mode weights, ``KL(generated || true)`` (for uniform weights PacGAN's
``log K - entropy of coverage``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mode_statistics(
    samples: Tensor, means: Tensor, stds: Tensor, weights: Tensor | None = None, min_count: int = 20
) -> dict[str, Tensor]:
    """``modes`` (captured: ``min_count`` high-quality samples), ``modes_reached`` (PacGAN's: one),
    ``high_quality`` (fraction) and ``reverse_kl`` of a sample set.

    Args:
        samples: ``(n, d)`` generated points.
        means: ``(k, d)`` mode centres; ``stds``: ``(k,)`` their standard deviations.
        weights: ``(k,)`` true mode probabilities (default uniform).
        min_count: High-quality samples a mode needs to count as captured (genlab: 20 of 2,500, stricter than PacGAN's one).
    """
    k = len(means)
    distances = torch.cdist(samples, means)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= 3 * stds[nearest]
    counts = torch.bincount(nearest[high_quality], minlength=k).to(samples.dtype)
    weights = torch.full((k,), 1.0 / k, dtype=samples.dtype) if weights is None else weights.to(samples.dtype)
    if counts.sum() > 0:
        histogram = counts / counts.sum()
        present = histogram > 0
        reverse_kl = (histogram[present] * (histogram[present] / weights[present]).log()).sum()
    else:  # no sample near any mode: the divergence is unbounded
        reverse_kl = torch.tensor(math.inf)
    return {
        "modes": (counts >= min_count).sum().to(samples.dtype),
        "modes_reached": (counts >= 1).sum().to(samples.dtype),
        "high_quality": high_quality.to(samples.dtype).mean(),
        "reverse_kl": reverse_kl,
    }


def gaussian_mmd2(x: Tensor, y: Tensor, bandwidth: float = 1.0) -> Tensor:
    """Unbiased estimate of the squared MMD with kernel ``exp(-|a - b|^2 / (2 bandwidth^2))``."""

    def mean_kernel(a: Tensor, b: Tensor, same: bool) -> Tensor:
        kernel = torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))
        if same:  # drop the diagonal k(a_i, a_i) = 1 for unbiasedness
            n = len(a)
            return (kernel.sum() - n) / (n * (n - 1))
        return kernel.mean()

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)


def wasserstein1_1d(x: Tensor, y: Tensor, num_quantiles: int = 1000) -> Tensor:
    """W1 between 1-D empirical distributions: the mean gap between their quantile functions.

    ``x`` and ``y`` are ``(n,)`` and ``(m,)``, or ``(n, p)`` and ``(m, p)`` for ``p`` distances at once.
    """
    levels = (torch.arange(num_quantiles, dtype=x.dtype) + 0.5) / num_quantiles
    return (torch.quantile(x, levels, dim=0) - torch.quantile(y, levels, dim=0)).abs().mean(dim=0)


def sliced_wasserstein1(x: Tensor, y: Tensor, num_projections: int = 256, seed: int = 0) -> Tensor:
    """Mean over random unit directions of the 1-D W1 between the projected samples."""
    directions = torch.randn(num_projections, x.shape[1], generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    directions = directions / directions.norm(dim=1, keepdim=True)
    return wasserstein1_1d(x @ directions.T, y @ directions.T).mean()


def histograms(x: Tensor, y: Tensor, bins: int = 50, eps: float = 1e-10) -> tuple[Tensor, Tensor]:
    """Normalised histograms of ``x`` and ``y`` on a common grid spanning both (any dimension <= 3)."""
    both = torch.cat([x, y])
    ranges = [
        bound for low, high in zip(both.min(0).values.tolist(), both.max(0).values.tolist(), strict=True) for bound in (low, high)
    ]
    p = torch.histogramdd(x.double(), bins=bins, range=ranges).hist.flatten() + eps
    q = torch.histogramdd(y.double(), bins=bins, range=ranges).hist.flatten() + eps
    return p / p.sum(), q / q.sum()


def binned_kl(x: Tensor, y: Tensor, bins: int = 50) -> Tensor:
    """``KL(p_x || p_y)`` between histograms of two samples (a tiny ``eps`` keeps empty bins finite)."""
    p, q = histograms(x, y, bins)
    return (p * (p / q).log()).sum()


def binned_js(x: Tensor, y: Tensor, bins: int = 50) -> Tensor:
    """Jensen–Shannon divergence between histograms of two samples, in nats: within [0, log 2]."""
    p, q = histograms(x, y, bins)
    m = (p + q) / 2
    return 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()


def nearest_neighbour_radii(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Each point's distance to its k-th nearest other point: the radius of its k-NN ball."""
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, {len(features) - 1}] for {len(features)} points, got {k}.")
    # k + 1 smallest: the point's distance to itself (0) is among them
    return torch.cat(
        [torch.cdist(block, features).topk(k + 1, dim=1, largest=False).values[:, -1] for block in features.split(chunk)]
    )


def reference_radii(real: Tensor, ks: tuple[int, ...], chunk: int = 2048) -> dict[int, Tensor]:
    """The real points' k-NN radii for each ``k`` of ``ks``, in float64: those
    :func:`precision_recall_density_coverage` computes at every call (given its two ``k``), for a
    caller that compares one reference with many sample sets to compute once. One pass of distances,
    the ``max(ks) + 1`` smallest per point: bit for bit :func:`nearest_neighbour_radii` of each ``k``
    with the same ``chunk`` (the same distance blocks, and a row's ``k + 1``-th smallest is one of its entries)."""
    real = real.double()
    if not 1 <= min(ks) <= max(ks) < len(real):
        raise ValueError(f"every k must be in [1, {len(real) - 1}] for {len(real)} points, got {ks}.")
    smallest = torch.cat(
        [torch.cdist(block, real).topk(max(ks) + 1, dim=1, largest=False).values for block in real.split(chunk)]
    )  # the point's distance to itself (0) is among them: column k is the k-th nearest other point
    return {k: smallest[:, k] for k in ks}


def precision_recall_density_coverage(
    real: Tensor,
    fake: Tensor,
    k_precision_recall: int = 3,
    k_density_coverage: int = 5,
    chunk: int = 2048,
    real_radii: dict[int, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Fidelity and diversity apart, on feature vectors (rows), in float64:

    - precision: share of fake points inside some real point's k-NN ball (Kynkäänniemi et al., 2019);
    - recall: share of real points inside some fake point's k-NN ball;
    - density: fake points' mean count of real k-NN balls containing them, divided by k (≈ 1 for
      matching distributions, above 1 when fakes crowd where real points are dense; Naeem et al., 2020);
    - coverage: share of real points whose k-NN ball holds at least one fake point.

    Precision and recall use ``k_precision_recall`` neighbours, density and coverage
    ``k_density_coverage`` (the papers' 3 and 5). Distances ``chunk`` rows at a time: 10,000 ×
    10,000 points take seconds on a CPU and never a 10,000² matrix at once. ``real_radii``: the real
    points' radii from :func:`reference_radii` with both ``k`` (and the same ``chunk``), where the caller
    keeps them between calls on one reference: the same numbers, without two of a call's four passes of distances.
    """
    real, fake = real.double(), fake.double()
    if real_radii is None:
        real_radii_pr = nearest_neighbour_radii(real, k_precision_recall, chunk)
        real_radii_dc = nearest_neighbour_radii(real, k_density_coverage, chunk)
    elif any(k not in real_radii or real_radii[k].shape != (len(real),) for k in (k_precision_recall, k_density_coverage)):
        raise ValueError(
            f"real_radii must hold the radii of the {len(real)} real points for k = {k_precision_recall} and "
            f"{k_density_coverage}: compute them with reference_radii(real, ({k_precision_recall}, {k_density_coverage}))."
        )
    else:
        real_radii_pr, real_radii_dc = real_radii[k_precision_recall], real_radii[k_density_coverage]
    fake_radii_pr = nearest_neighbour_radii(fake, k_precision_recall, chunk)
    fake_in_real_ball = torch.zeros(len(fake), dtype=torch.bool)
    real_balls_per_fake = torch.zeros(len(fake), dtype=torch.float64)
    real_in_fake_ball = torch.zeros(len(real), dtype=torch.bool)
    nearest_fake = torch.empty(len(real), dtype=torch.float64)
    for rows in torch.arange(len(real)).split(chunk):
        distances = torch.cdist(real[rows], fake)  # (rows, fakes)
        fake_in_real_ball |= (distances < real_radii_pr[rows, None]).any(0)
        real_balls_per_fake += (distances < real_radii_dc[rows, None]).sum(0)
        real_in_fake_ball[rows] = (distances < fake_radii_pr[None, :]).any(1)
        nearest_fake[rows] = distances.min(1).values
    return {
        "precision": fake_in_real_ball.double().mean(),
        "recall": real_in_fake_ball.double().mean(),
        "density": real_balls_per_fake.mean() / k_density_coverage,
        "coverage": (nearest_fake < real_radii_dc).double().mean(),
    }


def side_by_side(reference: list[Tensor], other: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Several feature spaces of the same points joined into one: each block divided by its mean
    row norm on ``reference``, so that no space dominates the distances by its scale alone; the
    same scales apply to ``other``. Returns the joined ``(reference, other)``."""
    scales = [block.double().norm(dim=1).mean() for block in reference]
    return tuple(
        torch.cat([block.double() / scale for block, scale in zip(blocks, scales)], dim=1) for blocks in (reference, other)
    )
