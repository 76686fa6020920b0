"""The courses' mathematics as checks, part 2 (docs/theory.md, items 7, 10, 11): change of variables,
divergences between distributions, the central limit theorem; closed forms against seeded Monte Carlo
estimates, each with the tolerance it is held to."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import Categorical, Cauchy, Normal, kl_divergence
from torch.testing import assert_close

from lightning_modules.components.distribution_metrics import gaussian_mmd2, wasserstein1_1d
from tests.conftest import F64, generator, randn

STANDARD_NORMAL = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))


def rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=F64)


def ks_distance(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov–Smirnov statistic sup |F_empirical − F| of a 1-D sample against a CDF."""
    ordered = samples.sort().values
    n = len(ordered)
    theoretical = cdf(ordered)
    steps = torch.arange(1, n + 1, dtype=F64) / n
    return torch.maximum(steps - theoretical, theoretical - (steps - 1 / n)).max().item()


# 7. Change of variables: U = X + Y, V = X − Y

NORMAL_VARIANCE_2 = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(math.sqrt(2), dtype=F64))


def uv_from_xy(xy: torch.Tensor) -> torch.Tensor:
    return torch.stack([xy[0] + xy[1], xy[0] - xy[1]])


def xy_from_uv(uv: torch.Tensor) -> torch.Tensor:
    return torch.stack([(uv[0] + uv[1]) / 2, (uv[0] - uv[1]) / 2])


def standard_normal_density(x: torch.Tensor) -> torch.Tensor:
    return STANDARD_NORMAL.log_prob(x).exp()


def test_jacobian_of_the_inverse_map_is_a_half_matrix_with_determinant_minus_a_half():
    point = randn(generator(12), 2)
    J = jacobian(xy_from_uv, point)  # ∂(x, y)/∂(u, v)
    assert_close(J, torch.tensor([[0.5, 0.5], [0.5, -0.5]], dtype=F64), rtol=0, atol=0)
    assert torch.linalg.det(J).item() == pytest.approx(-0.5, abs=1e-15)
    assert_close(J @ jacobian(uv_from_xy, point), torch.eye(2, dtype=F64), rtol=0, atol=0)


def test_density_of_u_v_is_f_xy_at_the_preimage_times_a_half_and_a_product_of_two_n_0_2():
    u, v = torch.meshgrid(torch.linspace(-5, 5, 41, dtype=F64), torch.linspace(-5, 5, 41, dtype=F64), indexing="ij")
    abs_det = torch.linalg.det(jacobian(xy_from_uv, torch.zeros(2, dtype=F64))).abs()
    x, y = xy_from_uv(torch.stack([u, v]))
    f_uv = standard_normal_density(x) * standard_normal_density(y) * abs_det
    assert_close(f_uv, NORMAL_VARIANCE_2.log_prob(u).exp() * NORMAL_VARIANCE_2.log_prob(v).exp(), rtol=1e-12, atol=0)
    # the inverse identity: f_XY(x, y) = f_UV(x + y, x − y)·|det ∂(u, v)/∂(x, y)| = f_UV(…)·2
    f_uv_at_image = NORMAL_VARIANCE_2.log_prob(x + y).exp() * NORMAL_VARIANCE_2.log_prob(x - y).exp()
    assert_close(f_uv_at_image * 2, standard_normal_density(x) * standard_normal_density(y), rtol=1e-12, atol=0)


def sum_and_difference_samples(n: int = 10**6) -> tuple[torch.Tensor, torch.Tensor]:
    xy = randn(generator(13), n, 2)
    return xy[:, 0] + xy[:, 1], xy[:, 0] - xy[:, 1]


def test_histogram_of_sum_and_difference_matches_two_independent_n_0_2():
    u, v = sum_and_difference_samples()
    edges = torch.linspace(-4, 4, 17, dtype=F64)  # 16 × 16 bins of side 0.5
    counts = torch.histogramdd(torch.stack([u, v], dim=1), bins=[edges, edges]).hist
    bin_mass = NORMAL_VARIANCE_2.cdf(edges).diff()
    expected = len(u) * torch.outer(bin_mass, bin_mass)  # independent: the joint mass is the product
    deviations = (counts - expected) / expected.sqrt()  # standardised Poisson deviations
    assert deviations.abs().max() < 5  # measured 3.0
    assert deviations.pow(2).sum() < 256 + 4 * math.sqrt(2 * 256)  # χ² with 256 bins: mean 256, sd √512; measured 259


def test_sum_and_difference_marginals_pass_a_ks_test_against_n_0_2():
    u, v = sum_and_difference_samples()
    critical = 1.36 / math.sqrt(len(u))  # 5 % level
    assert ks_distance(u, NORMAL_VARIANCE_2.cdf) < critical and ks_distance(v, NORMAL_VARIANCE_2.cdf) < critical


# 10. Divergences between distributions


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) of discrete distributions along the last axis: 0·log(0/q) = 0, p·log(p/0) = ∞."""
    return torch.where(p > 0, p * (p / q).log(), 0.0).sum(-1)


def js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = (p + q) / 2
    return (kl(p, m) + kl(q, m)) / 2


def probabilities(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def test_kl_is_asymmetric_and_infinite_where_the_second_distribution_has_no_mass():
    p, q = probabilities(0.9, 0.1), probabilities(0.5, 0.5)
    assert kl(p, q).item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), rel=1e-14)
    assert kl(q, p).item() == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5), rel=1e-14)
    assert kl(p, q) < kl(q, p)
    half_support, full_support = probabilities(0.5, 0.5, 0.0), probabilities(0.25, 0.25, 0.5)
    assert kl(half_support, full_support).item() == pytest.approx(math.log(2), rel=1e-14)
    assert kl(full_support, half_support) == math.inf
    assert kl(probabilities(1, 0), probabilities(0, 1)) == math.inf == kl(probabilities(0, 1), probabilities(1, 0))
    for a, b in ((p, q), (q, p), (half_support, full_support), (full_support, half_support)):
        assert_close(kl(a, b), kl_divergence(Categorical(probs=a), Categorical(probs=b)), rtol=1e-14, atol=0)


def random_distributions(*shape: int) -> torch.Tensor:
    return torch.softmax(2 * randn(generator(16), *shape), dim=-1)


def test_js_is_symmetric_bounded_by_log_2_and_reaches_it_on_disjoint_supports():
    p, q = random_distributions(2, 1000, 6)
    assert_close(js(p, q), js(q, p), rtol=1e-14, atol=0)
    assert (js(p, q) >= 0).all() and (js(p, q) < math.log(2)).all()
    assert js(probabilities(0.5, 0.5, 0, 0), probabilities(0, 0, 0.2, 0.8)).item() == pytest.approx(math.log(2), rel=1e-15)


def test_square_root_of_js_obeys_the_triangle_inequality_and_js_does_not():
    p, q, r = random_distributions(3, 1000, 6)
    assert (js(p, r).sqrt() <= js(p, q).sqrt() + js(q, r).sqrt() + 1e-12).all()
    p, q, r = probabilities(1, 0), probabilities(0.5, 0.5), probabilities(0, 1)
    assert js(p, r) > js(p, q) + js(q, r)  # log 2 = 0.693 > 2 × 0.216
    assert js(p, r).sqrt() <= js(p, q).sqrt() + js(q, r).sqrt()


def sorted_sample_w1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W1 between two equal-size 1-D samples (columns): the mean gap between their sorted values."""
    return (x.sort(dim=0).values - y.sort(dim=0).values).abs().mean(dim=0)


@pytest.mark.parametrize("w1", [sorted_sample_w1, wasserstein1_1d], ids=["sorted_samples", "quantile_levels"])
def test_wasserstein1_is_finite_on_disjoint_supports_and_equals_the_shift(w1):
    for shift in (1.0, 10.0):  # point masses at 0 and at the shift: KL = ∞ and JS = log 2 for every shift
        assert w1(torch.zeros(100, dtype=F64), torch.full((100,), shift, dtype=F64)).item() == pytest.approx(shift, rel=1e-14)
    samples = randn(generator(17), 1000)
    assert w1(samples, samples + 3).item() == pytest.approx(3, rel=1e-12)


@pytest.mark.parametrize("w1", [sorted_sample_w1, wasserstein1_1d], ids=["sorted_samples", "quantile_levels"])
def test_wasserstein1_is_a_metric_on_1d_samples(w1):
    g = generator(18)
    a, b, c = 3 * rand(g, 3, 1, 500) + (0.2 + 2 * rand(g, 3, 1, 500)) * randn(g, 3, 200, 500)  # 500 triples
    assert (w1(a, c) <= w1(a, b) + w1(b, c) + 1e-12).all()
    assert_close(w1(a, b), w1(b, a), rtol=1e-14, atol=1e-15)
    assert (w1(a, b) > 0).all() and w1(a, a).eq(0).all()


def biased_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """The V-statistic ‖mean embedding of x − mean embedding of y‖² (diagonal kernel terms kept)."""

    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def test_biased_mmd2_is_nonnegative_and_zero_only_for_equal_samples_and_the_unbiased_one_goes_negative():
    g = generator(19)
    pairs = [(randn(g, 20, 2), randn(g, 20, 2) + shift) for shift in (0.0, 0.3) for _ in range(100)]
    assert all(biased_mmd2(x, y) >= 0 for x, y in pairs)
    assert any(gaussian_mmd2(x, y) < 0 for x, y in pairs)  # genlab's gaussian_mmd2 is the unbiased estimate
    x = pairs[0][0]
    assert biased_mmd2(x, x[torch.randperm(20, generator=g)]).abs() < 1e-14
    moved = x.clone()
    moved[0, 0] += 1e-3
    assert biased_mmd2(x, moved) > 0


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_unbiased_mmd2_averages_to_its_closed_form(shift):
    """Kernel exp(−d²/2) on N(0, 1) against N(shift, 1): MMD² = 2/√3·(1 − exp(−shift²/6))."""
    g = generator(20)
    estimates = torch.stack([gaussian_mmd2(randn(g, 50, 1), randn(g, 50, 1) + shift) for _ in range(400)])
    closed_form = 2 / math.sqrt(3) * (1 - math.exp(-(shift**2) / 6))
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - closed_form) < 4 * standard_error


# 11. The central limit theorem and where it fails


@pytest.mark.parametrize("name", ["uniform", "exponential"])
def test_standardised_sample_means_approach_the_normal(name):
    repetitions, distances = 100_000, []
    for n in (1, 4, 32):
        u = rand(generator(21), repetitions, n)
        draws, mean, std = (u, 0.5, math.sqrt(1 / 12)) if name == "uniform" else (-u.log(), 1.0, 1.0)
        distances.append(ks_distance((draws.mean(1) - mean) / (std / math.sqrt(n)), STANDARD_NORMAL.cdf))
    assert distances[0] > distances[1] > distances[2]
    if name == "uniform":  # symmetric: the gap closes like 1/n, below the test's 5 % critical value at n = 32
        assert distances[2] < 1.36 / math.sqrt(repetitions)
    else:  # skewness 2: the Edgeworth gap γ·φ(0)/(6√n) = 0.0235 at n = 32
        assert distances[2] == pytest.approx(2 / (6 * math.sqrt(2 * math.pi * 32)), abs=0.004)


def test_cauchy_sample_means_do_not_concentrate():
    repetitions = 10_000
    cauchy = Cauchy(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    g = generator(22)
    for n in (1, 10, 100, 1000):
        means = cauchy.icdf(rand(g, repetitions, n)).mean(1)
        quartiles = torch.quantile(means, torch.tensor([0.25, 0.75], dtype=F64))
        assert (quartiles[1] - quartiles[0]).item() == pytest.approx(2, abs=0.15)  # the standard Cauchy's IQR
        assert ks_distance(means, cauchy.cdf) < 1.36 / math.sqrt(repetitions)
