"""Lipschitz strategies of the WGAN critic against linear algebra and hand computations."""

import copy
import itertools
from functools import partial

import pytest
import torch
from torch import nn

from core.errors import ConfigError
from datamodules import Ring8DataModule
from lightning_modules.components.adversarial import AdversarialModule
from lightning_modules.components.lipschitz import (
    GradientPenalty,
    LipschitzStrategy,
    SpectralNormalization,
    SpectralRegularization,
    TorchSpectralNorm,
    WeightClipping,
    linear_layers,
)
from lightning_modules.components.losses import WassersteinLoss


def critic(seed=0, widths=(2, 64, 64, 1)):
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def spectral_norms(module):
    return torch.stack([torch.linalg.matrix_norm(layer.weight.detach(), ord=2) for layer in linear_layers(module)])


def test_power_iteration_converges_to_the_largest_singular_value():
    torch.manual_seed(0)
    weight = torch.randn(64, 32, dtype=torch.float64)
    u = nn.functional.normalize(torch.randn(64, dtype=torch.float64), dim=0)
    sigma, _ = SpectralNormalization.power_iteration(weight, u, iterations=500)
    assert sigma.item() == pytest.approx(torch.linalg.matrix_norm(weight, ord=2).item(), rel=1e-4)


def test_hand_written_spectral_norm_matches_torch_parametrization():
    ours, theirs = critic(), critic()
    SpectralNormalization(warmup_iterations=500).prepare(ours)
    TorchSpectralNorm(n_power_iterations=500).prepare(theirs)
    for mine, torchs in zip(linear_layers(ours), linear_layers(theirs)):
        torch.testing.assert_close(mine.weight, torchs.weight, atol=1e-4, rtol=0)
        assert torch.linalg.matrix_norm(mine.weight, ord=2).item() == pytest.approx(1.0, abs=1e-4)


def test_enforcement_bounds_the_product_of_spectral_norms():
    net = critic()
    with torch.no_grad():
        for layer in linear_layers(net):
            layer.weight.mul_(7.0)
    SpectralNormalization(warmup_iterations=200).prepare(net)
    assert spectral_norms(net).prod().item() <= 1 + 1e-3


def test_one_power_iteration_per_step_tracks_sigma_while_training():
    """With the persistent vector, one iteration per step keeps the bound loose but bounded even
    when the loss pushes every weight up; a full renormalisation restores it to 1e-3."""
    net = critic()
    strategy = SpectralNormalization(n_power_iterations=1)
    strategy.prepare(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.0, 0.9))
    unconstrained = copy.deepcopy(net)
    unconstrained_optimizer = torch.optim.Adam(unconstrained.parameters(), lr=1e-3, betas=(0.0, 0.9))
    for _ in range(100):
        x = torch.randn(128, 2)
        for model, opt in ((net, optimizer), (unconstrained, unconstrained_optimizer)):
            opt.zero_grad()
            (-(model(x) ** 2).mean()).backward()  # pushes the weights to grow
            opt.step()
        strategy.after_step(net)
        assert spectral_norms(net).prod().item() <= 1.2
    assert spectral_norms(unconstrained).prod().item() > 2.0
    strategy.normalize(net, iterations=300)
    assert spectral_norms(net).prod().item() <= 1 + 1e-3
    assert "0.spectral_u" in net.state_dict()  # the power-iteration vectors are checkpointed


def test_weight_clipping_keeps_every_weight_within_c():
    net = critic()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(100)
    WeightClipping(0.05).after_step(net)
    assert all(p.abs().max() <= 0.05 for p in net.parameters())
    assert any((p.abs() == 0.05).any() for p in net.parameters())


def test_gradient_penalty_equals_hand_computation():
    # d(x) = sum(x^2): grad = 2 x_hat, so the penalty is weight * mean((2 |x_hat| - 1)^2).
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, -2.0]])
    eps = torch.tensor([[0.25], [0.5]])
    x_hat = torch.tensor([[0.25, 0.0], [0.0, 0.0]])  # eps * real + (1 - eps) * fake
    expected = 10.0 * ((2 * x_hat.norm(dim=1) - 1) ** 2).mean()  # = 10 * ((0.5 - 1)^2 + (0 - 1)^2) / 2
    penalty = GradientPenalty(10.0).penalty(lambda x: (x**2).sum(dim=1), real, fake, eps=eps)
    assert penalty.item() == pytest.approx(expected.item()) == pytest.approx(6.25)


def test_gradient_penalty_is_differentiable_in_the_critic_parameters():
    net = critic()
    penalty = GradientPenalty(10.0).penalty(lambda x: net(x).squeeze(1), torch.randn(16, 2), torch.randn(16, 2))
    penalty.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.dim() == 2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: WeightClipping(0), "WeightClipping.clip_value"),
        (lambda: GradientPenalty(-1), "GradientPenalty.weight"),
        (lambda: SpectralNormalization(0), "n_power_iterations"),
    ],
)
def test_bad_strategy_settings(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_prepare_is_idempotent_for_the_power_iteration_state():
    net = critic()
    strategy = SpectralNormalization()
    strategy.prepare(net)
    u = copy.deepcopy(net[0].spectral_u)
    strategy.prepare(net)
    assert torch.allclose(net[0].spectral_u, u, atol=1e-4)


class TinyCritic2D(AdversarialModule):
    """The smallest adversarial module on 2-D data: checks that the training step applies a strategy."""

    def __init__(self, strategy):
        super().__init__(WassersteinLoss(), 2, 2, 1e-3, 1e-3, (0.0, 0.9), (0.0, 0.9), lipschitz=strategy)
        self.generator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))
        strategy.prepare(self.discriminator)


def ring8() -> Ring8DataModule:
    return Ring8DataModule(num_samples=512, batch_size=64)


def test_training_step_applies_clipping_after_every_critic_step(fit_tiny):
    _, model = fit_tiny(partial(TinyCritic2D, WeightClipping(0.02)), ring8(), max_epochs=2)
    assert all(p.abs().max() <= 0.02 for p in model.discriminator.parameters())
    assert any(p.abs().max() > 0.02 for p in model.generator.parameters())


def test_training_step_adds_and_logs_the_gradient_penalty(fit_tiny):
    trainer, _ = fit_tiny(partial(TinyCritic2D, GradientPenalty(10.0)), ring8(), max_epochs=2)
    metrics = trainer.callback_metrics
    assert metrics["train/d_penalty_epoch"] > 0
    assert {"train/wasserstein_estimate_epoch", "train/critic_real_epoch"} <= set(metrics)


def test_training_step_keeps_spectral_norms_near_one(fit_tiny):
    _, model = fit_tiny(partial(TinyCritic2D, SpectralNormalization()), ring8(), max_epochs=2)
    assert spectral_norms(model.discriminator).max().item() == pytest.approx(1.0, abs=0.05)


def test_spectral_regularization_penalises_half_the_sum_of_squared_spectral_norms():
    net = critic().double()
    strategy = SpectralRegularization(weight=0.3, warmup_iterations=2000)
    strategy.prepare(net)
    penalty = strategy.penalty(None, None, None, critic=net)
    torch.testing.assert_close(penalty, 0.3 / 2 * spectral_norms(net).pow(2).sum(), rtol=1e-8, atol=0)


def test_spectral_regularizations_gradient_is_autograds_through_an_svd():
    torch.manual_seed(1)
    layer = nn.Linear(5, 4).double()
    strategy = SpectralRegularization(weight=0.5, warmup_iterations=2000)
    strategy.prepare(layer)
    (ours,) = torch.autograd.grad(strategy.penalty(None, None, None, critic=layer), layer.weight)
    (theirs,) = torch.autograd.grad(0.5 / 2 * torch.linalg.svdvals(layer.weight)[0] ** 2, layer.weight)
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-12)


def test_training_with_spectral_regularization_logs_the_penalty_and_shrinks_the_norms(fit_tiny):
    trainer, regularized = fit_tiny(partial(TinyCritic2D, SpectralRegularization(weight=1.0)), ring8(), max_epochs=3)
    assert trainer.callback_metrics["train/d_penalty_epoch"] > 0
    _, free = fit_tiny(partial(TinyCritic2D, LipschitzStrategy()), ring8(), max_epochs=3)
    assert spectral_norms(regularized.discriminator).sum() < spectral_norms(free.discriminator).sum()
