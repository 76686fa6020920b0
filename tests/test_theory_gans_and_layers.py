"""The courses' mathematics as checks, part 3 (docs/theory.md, items 8, 9, 12, 13): GAN theory and a
toy GAN's gradients by hand, the bilinear minimax game, batch normalisation, convolution output sizes."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import hessian
from torch.distributions import Normal
from torch.testing import assert_close

from lightning_modules.components.lenet import conv_output_size
from tests.conftest import F64, generator, randn

# 8. GAN theory

GRID = torch.linspace(-30, 30, 300_001, dtype=F64)


def log_density(mean: float, std: float) -> torch.Tensor:
    return Normal(torch.tensor(mean, dtype=F64), torch.tensor(std, dtype=F64)).log_prob(GRID)


def value(logit: torch.Tensor, log_p_data: torch.Tensor, log_p_g: torch.Tensor) -> torch.Tensor:
    """V(D) = ∫ p_data log D + p_g log(1 − D) with D = sigmoid(logit), by the trapezoid rule."""
    integrand = log_p_data.exp() * F.logsigmoid(logit) + log_p_g.exp() * F.logsigmoid(-logit)
    return torch.trapezoid(integrand, GRID)


def js_divergence_on_grid(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    return 0.5 * torch.trapezoid(log_p.exp() * (log_p - log_m) + log_q.exp() * (log_q - log_m), GRID)


def test_optimal_discriminator_maximises_the_value_pointwise_and_in_the_integral():
    log_p_data, log_p_g = log_density(0.0, 1.0), log_density(1.0, 1.5)
    optimal_logit = (log_p_data - log_p_g).requires_grad_()  # D* = p_data / (p_data + p_g)
    integrand = log_p_data.exp() * F.logsigmoid(optimal_logit) + log_p_g.exp() * F.logsigmoid(-optimal_logit)
    (pointwise_slope,) = torch.autograd.grad(integrand.sum(), optimal_logit)
    assert pointwise_slope.abs().max() < 1e-15
    best = value(optimal_logit.detach(), log_p_data, log_p_g)
    for direction in (torch.ones_like(GRID), torch.sin(GRID), torch.tanh(GRID)):
        for size in (-0.5, -0.05, 0.05, 0.5):
            perturbed = value(optimal_logit.detach() + size * direction, log_p_data, log_p_g)
            assert perturbed < best - 0.05 * size**2  # measured drops: 0.09–0.21 × size²


@pytest.mark.parametrize("mean, std", [(1.0, 1.5), (3.0, 0.5), (0.0, 3.0)])
def test_value_at_the_optimal_discriminator_is_minus_log_4_plus_twice_js(mean, std):
    log_p_data, log_p_g = log_density(0.0, 1.0), log_density(mean, std)
    at_optimum = value(log_p_data - log_p_g, log_p_data, log_p_g)
    assert at_optimum.item() == pytest.approx(-math.log(4) + 2 * js_divergence_on_grid(log_p_data, log_p_g).item(), abs=1e-10)


def test_value_at_the_optimal_discriminator_is_minus_log_4_at_p_g_equal_p_data_and_0_for_disjoint_supports():
    log_p = log_density(0.0, 1.0)
    assert torch.sigmoid(log_p - log_p).eq(0.5).all()  # D* = ½
    assert value(log_p - log_p, log_p, log_p).item() == pytest.approx(-math.log(4), abs=1e-12)
    far = log_density(15.0, 1.0)  # overlap below 1e-13: JS = log 2 and V(G, D*) = 0, its largest value
    assert js_divergence_on_grid(log_p, far).item() == pytest.approx(math.log(2), abs=1e-10)
    assert value(log_p - far, log_p, far).item() == pytest.approx(0, abs=1e-10)


@pytest.mark.parametrize("generator_loss", ["non_saturating", "saturating"])
def test_toy_gan_hand_derived_gradients_match_autograd(generator_loss):
    """G: z ∈ R² ↦ ReLU(W_g z) ∈ R⁵; D: x ↦ sigmoid(W_d x); losses averaged over a batch of 8."""
    g = generator(14)
    W_g, W_d = randn(g, 5, 2).requires_grad_(), randn(g, 1, 5).requires_grad_()
    z, real = randn(g, 8, 2), randn(g, 8, 5).abs()
    pre_activation = z @ W_g.T
    fake = F.relu(pre_activation)
    real_logit, fake_logit = real @ W_d.T, fake @ W_d.T  # (8, 1)
    discriminator_loss = -(F.logsigmoid(real_logit) + F.logsigmoid(-fake_logit)).mean()  # −log D(x) − log(1 − D(G(z)))
    if generator_loss == "non_saturating":
        generator_loss_value = -F.logsigmoid(fake_logit).mean()  # −log D(G(z))
    else:
        generator_loss_value = F.logsigmoid(-fake_logit).mean()  # log(1 − D(G(z)))
    auto_d_wd, auto_d_wg = torch.autograd.grad(discriminator_loss, (W_d, W_g), retain_graph=True)
    (auto_g_wg,) = torch.autograd.grad(generator_loss_value, W_g)

    with torch.no_grad():
        d_real, d_fake = torch.sigmoid(real_logit), torch.sigmoid(fake_logit)
        mask = (pre_activation > 0).to(F64)  # ReLU'
        hand_d_wd = (-(1 - d_real) * real + d_fake * fake).mean(0, keepdim=True)  # 1 × 5
        hand_d_wg = (d_fake * W_d * mask).T @ z / 8  # 5 × 2: through G, used only if G is not frozen
        fake_factor = -(1 - d_fake) if generator_loss == "non_saturating" else -d_fake
        hand_g_wg = (fake_factor * W_d * mask).T @ z / 8
    for auto, hand in ((auto_d_wd, hand_d_wd), (auto_d_wg, hand_d_wg), (auto_g_wg, hand_g_wg)):
        assert_close(auto, hand, rtol=1e-12, atol=1e-15)


# 9. Minimax on f(x, y) = (x − 1)(y − 1)


def bilinear(point: torch.Tensor) -> torch.Tensor:
    return (point[0] - 1) * (point[1] - 1)


def test_bilinear_game_has_one_stationary_point_a_saddle_with_hessian_eigenvalues_minus_one_and_one():
    saddle = torch.ones(2, dtype=F64)
    H = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    for point in randn(generator(15), 5, 2):
        assert_close(hessian(bilinear, point), H, rtol=0, atol=0)
        variable = point.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(bilinear(variable), variable)
        assert_close(gradient, H @ (point - saddle), rtol=0, atol=1e-15)  # zero only at (1, 1): det H = −1
    assert_close(torch.linalg.eigvalsh(H), torch.tensor([-1.0, 1.0], dtype=F64), rtol=0, atol=0)
    t = torch.linspace(-2, 2, 9, dtype=F64)
    assert_close(bilinear(torch.stack([1 + t, 1 + t])), t**2, rtol=0, atol=0)  # up along (1, 1)
    assert_close(bilinear(torch.stack([1 + t, 1 - t])), -(t**2), rtol=0, atol=0)  # down along (1, −1)


def test_bilinear_saddle_inequality_holds_with_equality():
    line = torch.arange(-10, 31, dtype=F64) / 10  # −1 to 3 in steps of 0.1, with 1 exactly
    ones = torch.ones_like(line)
    assert bilinear(torch.stack([ones, line])).eq(0).all()  # f(1, y) = 0 = f(1, 1) for every y
    assert bilinear(torch.stack([line, ones])).eq(0).all()  # f(x, 1) = 0 = f(1, 1) for every x
    x, y = torch.meshgrid(line, line, indexing="ij")
    table = bilinear(torch.stack([x, y]))  # rows: x (minimiser), columns: y (maximiser)
    worst_case_for_x, worst_case_for_y = table.max(dim=1).values, table.min(dim=0).values
    assert worst_case_for_x.min() == 0 == worst_case_for_y.max()  # min_x max_y f = max_y min_x f = f(1, 1)
    assert line[worst_case_for_x.argmin()] == 1 and line[worst_case_for_y.argmax()] == 1


# 12. Batch normalisation


def batch_norm() -> nn.BatchNorm1d:
    layer = nn.BatchNorm1d(3, momentum=0.1, eps=1e-5).to(F64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
        layer.bias.copy_(torch.tensor([0.1, 0.0, 3.0]))
    return layer


def test_batch_norm_in_training_normalises_with_the_batch_statistics_and_updates_running_ones():
    layer, batch = batch_norm(), 2 + 3 * randn(generator(23), 16, 3)
    running_mean, running_var = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    for _ in range(2):
        output = layer(batch)
        normalised = (batch - batch.mean(0)) / (batch.var(0, correction=0) + 1e-5).sqrt()  # biased variance
        assert_close(output, layer.weight * normalised + layer.bias, rtol=1e-12, atol=1e-12)
        running_mean = 0.9 * running_mean + 0.1 * batch.mean(0)
        running_var = 0.9 * running_var + 0.1 * batch.var(0, correction=1)  # unbiased variance
        assert_close(layer.running_mean, running_mean, rtol=1e-14, atol=0)
        assert_close(layer.running_var, running_var, rtol=1e-14, atol=0)


def test_batch_norm_in_evaluation_normalises_with_the_running_statistics():
    layer, g = batch_norm(), generator(24)
    for _ in range(5):
        layer(randn(g, 16, 3))
    batch = randn(g, 16, 3)
    altered = torch.cat([batch[:1], randn(g, 15, 3)])
    assert not torch.allclose(layer(batch)[0], layer(altered)[0])  # training: a sample depends on its batch
    layer.eval()
    expected = layer.weight * (batch - layer.running_mean) / (layer.running_var + 1e-5).sqrt() + layer.bias
    assert_close(layer(batch), expected, rtol=1e-12, atol=1e-12)
    assert_close(layer(altered)[0], layer(batch)[0], rtol=0, atol=0)  # evaluation: it does not
    assert_close(layer(batch[:1]), layer(batch)[:1], rtol=0, atol=0)


@pytest.mark.parametrize(
    "momentum, batch_size, batches", [(None, 8, 10_000), (0.1, 64, 500)], ids=["cumulative_average", "momentum_0.1"]
)
def test_batch_norm_running_statistics_converge_to_the_data_mean_and_variance(momentum, batch_size, batches):
    mean, std = torch.tensor([1.0, -2.0, 3.0], dtype=F64), torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    layer, g = nn.BatchNorm1d(3, momentum=momentum).to(F64), generator(25)
    for _ in range(batches):
        layer(mean + std * randn(g, batch_size, 3))
    # standard errors: of the cumulative average of all batches, or of the exponential average's stationary noise
    weight = 1 / batches if momentum is None else momentum / (2 - momentum)
    mean_error = std * math.sqrt(weight / batch_size)
    variance_error = std**2 * math.sqrt(weight * 2 / (batch_size - 1))
    assert ((layer.running_mean - mean).abs() < 5 * mean_error).all()
    assert ((layer.running_var - std**2).abs() < 5 * variance_error).all()  # not (B − 1)/B·σ²: unbiased batch variances


# 13. Convolution output size


def test_conv_output_size_formula_matches_conv2d_on_a_grid():
    mismatches = []
    for size, kernel, padding, stride in itertools.product((5, 6, 7, 8, 11, 16, 28, 32), range(1, 6), range(3), range(1, 4)):
        out = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)(torch.zeros(1, 1, size, size)).shape[-1]
        if out != conv_output_size(size, kernel, padding, stride) or out != (size - kernel + 2 * padding) // stride + 1:
            mismatches.append((size, kernel, padding, stride, out))
    assert mismatches == []


@pytest.mark.parametrize("kernel, padding", [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3)])
def test_only_stride_2_with_padding_floor_k_minus_1_over_2_takes_64_to_32(kernel, padding):
    candidates = list(itertools.product(range(kernel + 1), range(1, 4)))  # p in 0..k, s in 1..3
    by_conv2d = {
        (p, s) for p, s in candidates if nn.Conv2d(1, 1, kernel, stride=s, padding=p)(torch.zeros(1, 1, 64, 64)).shape[-1] == 32
    }
    by_formula = {(p, s) for p, s in candidates if conv_output_size(64, kernel, p, s) == 32}
    assert by_conv2d == by_formula == {(padding, 2)} == {((kernel - 1) // 2, 2)}
