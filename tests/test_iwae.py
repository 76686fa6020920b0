"""The importance-weighted autoencoder (Burda et al., 2016) as the VAE's ``train_samples: k``: its objective
against torch.distributions, its gradient in the form the paper's code computes, k = 1 as the ELBO, and the
paper's learning-rate schedule as the trainer applies it."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch.distributions import Bernoulli, Normal

from callbacks import TestSplitMetrics
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import VAE
from lightning_modules.vae import IWAE_STAGE_ENDS, iwae_lr_factor

TINY = {"sample_shape": (1, 1, 6), "latent_dim": 2, "hidden": (5,)}


def test_the_iwae_objective_is_log_mean_importance_weight_by_torch_distributions():
    torch.manual_seed(0)
    model = VAE(**TINY, train_samples=3).double()
    x = torch.bernoulli(torch.full((4, 1, 1, 6), 0.5, dtype=torch.float64))
    eps = torch.randn(3, 4, 2, dtype=torch.float64)
    terms = model.importance_weighted_terms(x, eps)
    mu, log_var = model.posterior(x)
    z = mu + (0.5 * log_var).exp() * eps  # (k, m, latent)
    log_w = (
        Bernoulli(logits=model.decoder(z)).log_prob(x.flatten(1)).sum(-1)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mu, (0.5 * log_var).exp()).log_prob(z).sum(-1)
    )
    torch.testing.assert_close(terms["bound"], log_w.logsumexp(0) - math.log(3), rtol=1e-12, atol=1e-12)
    # The paper's code builds the gradient as sum_j w~_j grad log w_j, the normalised weights held constant.
    (ours,) = torch.autograd.grad(terms["bound"].sum(), model.decoder[0].weight)
    (papers,) = torch.autograd.grad((torch.softmax(log_w, 0).detach() * log_w).sum(), model.decoder[0].weight)
    torch.testing.assert_close(ours, papers, rtol=1e-10, atol=1e-12)


def test_one_sample_of_the_bound_is_the_elbo_in_expectation_and_k1_trains_on_the_elbo():
    torch.manual_seed(1)
    model = VAE(**TINY, train_samples=1).double()
    x = torch.bernoulli(torch.full((1, 1, 1, 6), 0.3, dtype=torch.float64)).expand(40_000, 1, 1, 6)
    with torch.no_grad():
        one_sample = model.importance_weighted_terms(x, torch.randn(1, 40_000, 2, dtype=torch.float64))
        torch.manual_seed(2)
        elbo = model.elbo(x)["elbo"]
    # E[log w] = E[log p(x|z)] - KL: the same mean, whatever the estimator of the KL
    assert one_sample["bound"].mean().item() == pytest.approx(elbo.mean().item(), abs=0.02)
    torch.manual_seed(3)
    terms = model.mean_training_terms(x[:8])
    torch.manual_seed(3)
    assert "bound" not in terms and terms["elbo"].item() == model.elbo(x[:8])["elbo"].mean().item()


def test_the_schedule_is_the_papers_eight_stages():
    assert IWAE_STAGE_ENDS == (1, 4, 13, 40, 121, 364, 1093, 3280)
    factors = [iwae_lr_factor(epoch) for epoch in (0, 1, 3, 4, 12, 13, 39, 40, 120, 121, 363, 364, 1092, 1093, 3279, 5000)]
    assert factors == pytest.approx([1.0, 0.72, 0.72, 0.52, 0.52, 0.37, 0.37, 0.27, 0.27, 0.19, 0.19, 0.14, 0.14, 0.1, 0.1, 0.1])


class LearningRates(L.Callback):
    def __init__(self) -> None:
        self.by_epoch: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.by_epoch.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_an_iwae_trains_on_its_bound_under_the_schedule_and_tests_after_each_stage(synthetic_mnist, fit_tiny):
    rates, test_metrics = LearningRates(), TestSplitMetrics(every_n_epochs=0, epochs=[1, 4])
    model = partial(VAE, sample_shape=(1, 28, 28), latent_dim=3, hidden=(16,), train_samples=5, iwae_schedule=True, adam_eps=5e-6)
    data = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="unit")
    trainer, _ = fit_tiny(model, data, max_epochs=5, callbacks=[rates, test_metrics], limit_train_batches=2)
    assert rates.by_epoch == pytest.approx([1e-3, 7.2e-4, 7.2e-4, 7.2e-4, 5.2e-4])
    assert trainer.optimizers[0].defaults["eps"] == 5e-6
    assert trainer.callback_metrics["train/bound"] > trainer.callback_metrics["train/elbo"]  # k = 5 is tighter
    assert sorted(test_metrics.by_epoch) == ["test_elbo_epoch_1", "test_elbo_epoch_4", "test_nll_epoch_1", "test_nll_epoch_4"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"train_samples": 0}, "model.train_samples must be an integer >= 1"),
        ({"train_samples": 5, "kl_warmup_epochs": 10}, "model.kl_warmup_epochs weights the ELBO's KL term"),
        ({"iwae_schedule": True, "anneal_lr": True}, "are two schedules (choose one)"),
        ({"adam_eps": 0.0}, "model.adam_eps must be > 0"),
    ],
)
def test_a_bad_iwae_setting_is_one_line_naming_it(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        VAE(**TINY, **settings)
