"""Distribution metrics against closed forms and constructed cases."""

import math

import pytest
import torch

from lightning_modules.components.distribution_metrics import (
    binned_js,
    binned_kl,
    gaussian_mmd2,
    mode_statistics,
    sliced_wasserstein1,
    wasserstein1_1d,
)

RING = torch.tensor([[math.cos(2 * math.pi * i / 8), math.sin(2 * math.pi * i / 8)] for i in range(8)])


def normal(n, mean, std, seed, dim=1):
    return mean + std * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_mode_statistics_on_a_constructed_sample():
    generator = torch.Generator().manual_seed(0)
    on_modes = RING[:7].repeat_interleave(30, dim=0) + 0.01 * torch.randn(210, 2, generator=generator)  # 7 of 8 modes
    off_modes = torch.full((90, 2), 0.5)  # far (35 std) from every mode
    stats = mode_statistics(torch.cat([on_modes, off_modes]), RING, torch.full((8,), 0.01))
    assert stats["modes"].item() == 7
    assert stats["high_quality"].item() == pytest.approx(210 / 300, abs=0.02)  # 3 std keeps ~99.7 % of the on-mode points
    assert stats["reverse_kl"].item() == pytest.approx(math.log(8 / 7), abs=0.01)


def test_one_mode_is_the_maximal_reverse_kl_and_too_few_samples_do_not_count():
    stats = mode_statistics(RING[:1].repeat(100, 1), RING, torch.full((8,), 0.01))
    assert stats["modes"].item() == 1 and stats["reverse_kl"].item() == pytest.approx(math.log(8))
    sparse = mode_statistics(RING.repeat(5, 1), RING, torch.full((8,), 0.01), min_count=20)
    assert sparse["modes"].item() == 0 and sparse["high_quality"].item() == 1.0
    assert sparse["modes_reached"].item() == 8  # PacGAN's rule: one high-quality sample captures a mode


def test_reverse_kl_is_pacgans_log_k_minus_the_entropy_of_coverage():
    counts = torch.tensor([40, 25, 0, 10, 5, 0, 20, 0])  # high-quality samples per mode, 3 modes empty
    samples = torch.cat([RING[mode].repeat(int(count), 1) for mode, count in enumerate(counts)]).double()
    stats = mode_statistics(samples, RING.double(), torch.full((8,), 0.01))
    coverage = counts[counts > 0].double() / counts.sum()
    assert stats["reverse_kl"].item() == pytest.approx(math.log(8) + (coverage * coverage.log()).sum().item(), rel=1e-12)
    assert stats["modes_reached"].item() == 5 and stats["modes"].item() == 3  # 40, 25, 20 reach min_count 20


def test_wasserstein1_between_1d_gaussians_is_the_mean_gap():
    x, y = normal(200_000, 0.0, 1.0, 1).squeeze(1), normal(200_000, 1.5, 1.0, 2).squeeze(1)
    assert wasserstein1_1d(x, y).item() == pytest.approx(1.5, abs=0.02)


def test_sliced_wasserstein1_of_a_shift_is_two_over_pi_of_its_length():
    # E_u |<d, u>| over uniform unit directions in 2-D = |d| * 2 / pi.
    x = normal(10_000, 0.0, 1.0, 3, dim=2)
    y = normal(10_000, 0.0, 1.0, 4, dim=2) + torch.tensor([3.0, 4.0], dtype=torch.float64)
    # 1000 random directions: the Monte Carlo error of E|cos| is ~1.5 %, so 5 % is a 3-sigma bound.
    assert sliced_wasserstein1(x, y, num_projections=1000).item() == pytest.approx(5 * 2 / math.pi, rel=0.05)


def test_binned_kl_between_1d_gaussians_matches_the_closed_form():
    mu1, s1, mu2, s2 = 0.0, 1.0, 0.5, 1.5
    closed_form = math.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5
    x, y = normal(400_000, mu1, s1, 5), normal(400_000, mu2, s2, 6)
    assert binned_kl(x, y, bins=60).item() == pytest.approx(closed_form, rel=0.05)


def test_binned_js_is_bounded_by_zero_and_log_two():
    x = normal(20_000, 0.0, 1.0, 7)
    assert binned_js(x, x).item() == pytest.approx(0.0, abs=1e-9)
    assert binned_js(x, x + 100).item() == pytest.approx(math.log(2), abs=1e-6)
    partial = binned_js(x, normal(20_000, 1.0, 1.0, 8)).item()
    assert 0.0 < partial < math.log(2)


def test_gaussian_mmd_matches_the_closed_form_for_a_shift():
    # Unit-variance Gaussians, kernel bandwidth h: MMD^2 = 2 c (1 - exp(-|mu|^2 / (2 (h^2 + 2)))), c = (h^2/(h^2+2))^(d/2).
    h, mu = 1.0, torch.tensor([1.0, 0.0], dtype=torch.float64)
    c = h**2 / (h**2 + 2)
    closed_form = 2 * c * (1 - math.exp(-mu.dot(mu).item() / (2 * (h**2 + 2))))
    x, y = normal(4000, 0.0, 1.0, 9, dim=2), normal(4000, 0.0, 1.0, 10, dim=2) + mu
    assert gaussian_mmd2(x, y, h).item() == pytest.approx(closed_form, abs=0.01)
    assert abs(gaussian_mmd2(x, normal(4000, 0.0, 1.0, 11, dim=2), h).item()) < 0.005
