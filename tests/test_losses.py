"""GAN losses against their closed forms, values and gradients (w.r.t. the logits)."""

import pytest
import torch

from lightning_modules.components.losses import NonSaturatingGANLoss, SaturatingGANLoss, WassersteinLoss

LOGITS = torch.tensor([-12.0, -3.0, -0.5, 0.0, 0.7, 4.0], dtype=torch.float64)


def logit_gradient(loss_fn, logits):
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits)
    (gradient,) = torch.autograd.grad(loss, logits)
    return loss.detach(), gradient


def test_discriminator_loss_is_negative_log_likelihood():
    real, fake = LOGITS, LOGITS.flip(0)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    value = NonSaturatingGANLoss().discriminator(real, fake)
    torch.testing.assert_close(value, expected)
    # d/dl_real = (sigmoid(l) - 1)/m, d/dl_fake = sigmoid(l)/m
    m = len(LOGITS)
    _, g_real = logit_gradient(lambda r: NonSaturatingGANLoss().discriminator(r, fake), real)
    _, g_fake = logit_gradient(lambda f: NonSaturatingGANLoss().discriminator(real, f), fake)
    torch.testing.assert_close(g_real, (d_real - 1) / m)
    torch.testing.assert_close(g_fake, d_fake / m)


def test_saturating_generator_loss_and_its_vanishing_gradient():
    d_fake = torch.sigmoid(LOGITS)
    value, gradient = logit_gradient(SaturatingGANLoss().generator, LOGITS)
    torch.testing.assert_close(value, torch.log(1 - d_fake).mean())
    torch.testing.assert_close(gradient, -d_fake / len(LOGITS))
    # Where D rejects the fakes (D(G(z)) ~ 6e-6), G gets almost no signal.
    assert gradient[0].abs() < 1e-5 * gradient.abs().max()


def test_non_saturating_generator_loss_and_its_strong_gradient():
    d_fake = torch.sigmoid(LOGITS)
    value, gradient = logit_gradient(NonSaturatingGANLoss().generator, LOGITS)
    torch.testing.assert_close(value, -torch.log(d_fake).mean())
    torch.testing.assert_close(gradient, (d_fake - 1) / len(LOGITS))
    # ... while the non-saturating loss gives its largest gradient exactly there.
    assert gradient[0].abs() == gradient.abs().max()


@pytest.mark.parametrize("loss", [SaturatingGANLoss(), NonSaturatingGANLoss()])
def test_losses_stay_finite_at_extreme_logits(loss):
    extreme = torch.tensor([-200.0, 200.0], requires_grad=True)
    total = loss.discriminator(extreme, extreme) + loss.generator(extreme)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(extreme.grad).all()


def test_diagnostics_are_mean_probabilities():
    stats = NonSaturatingGANLoss().diagnostics(LOGITS, -LOGITS)
    torch.testing.assert_close(stats["d_real"], torch.sigmoid(LOGITS).mean())
    torch.testing.assert_close(stats["d_fake"], torch.sigmoid(-LOGITS).mean())


def test_wasserstein_loss_is_the_negated_dual_objective():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 0.0, 1.0])
    loss = WassersteinLoss()
    assert loss.discriminator(real, fake).item() == pytest.approx(0.0 - 2.0)
    assert loss.generator(fake).item() == pytest.approx(0.0)
    assert loss.diagnostics(real, fake)["wasserstein_estimate"].item() == pytest.approx(2.0)
    assert set(loss.diagnostics(real, fake)) == set(loss.diagnostic_names)
