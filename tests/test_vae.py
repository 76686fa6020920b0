"""The VAE's mathematics against closed forms and torch.distributions, its bounds, and bad settings."""

import math

import lightning as L
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cli import export
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import VAE
from lightning_modules.vae import bernoulli_log_likelihood, gaussian_kl, load_encoder, reparameterize
from tests.conftest import ROOT
from train import main

TINY_VAE = {"sample_shape": (1, 28, 28), "latent_dim": 3, "hidden": (16,)}


def test_kl_of_diagonal_gaussians_matches_torch_distributions():
    mu, log_var = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(gaussian_kl(mu, log_var), expected)


def test_elbo_equals_a_hand_computation():
    model = VAE(sample_shape=(1, 1, 3), latent_dim=1, hidden=(2,)).double()
    x = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    torch.manual_seed(7)
    terms = model.elbo(x)
    torch.manual_seed(7)
    eps = torch.randn(1, 1, dtype=torch.float64)
    with torch.no_grad():
        mu, log_var = model.encoder(x).unbind(dim=1)
        z = mu + math.exp(0.5 * log_var.item()) * eps[0]
        p = torch.sigmoid(model.decoder(z.view(1, 1)))[0]
    log_likelihood = sum(math.log(p[i]) if x[0, i] == 1 else math.log(1 - p[i]) for i in range(3))
    kl = 0.5 * (mu.item() ** 2 + math.exp(log_var.item()) - log_var.item() - 1)
    assert terms["reconstruction"].item() == pytest.approx(log_likelihood, rel=1e-12)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-12)
    assert terms["elbo"].item() == pytest.approx(log_likelihood - kl, rel=1e-12)


def test_bernoulli_log_likelihood_is_the_log_of_the_product_of_pixel_probabilities():
    logits, x = torch.randn(4, 6, dtype=torch.float64), torch.randint(0, 2, (4, 6)).double()
    p = torch.sigmoid(logits)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), (p**x * (1 - p) ** (1 - x)).prod(dim=1).log())


def test_reparameterised_gradients_match_the_score_function_estimate_and_the_closed_form():
    """d/dmu and d/dlog_var of E[z^2], z ~ N(mu, sigma^2), = (2 mu, sigma^2): the reparameterised
    estimate and the score-function (REINFORCE) estimate agree with it in expectation."""
    torch.manual_seed(0)
    n = 400_000
    mu = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    log_var = torch.tensor(math.log(0.5), dtype=torch.float64, requires_grad=True)
    z = reparameterize(mu.expand(n), log_var.expand(n))
    z.square().mean().backward()
    sigma2 = 0.5
    sample = z.detach()  # score function: E[f(z) d/dtheta log q(z)]
    score_mu = (sample.square() * (sample - 0.7) / sigma2).mean()
    score_log_var = (sample.square() * 0.5 * ((sample - 0.7) ** 2 / sigma2 - 1)).mean()
    assert mu.grad.item() == pytest.approx(2 * 0.7, abs=0.01) and score_mu.item() == pytest.approx(2 * 0.7, abs=0.03)
    assert log_var.grad.item() == pytest.approx(sigma2, abs=0.01) and score_log_var.item() == pytest.approx(sigma2, abs=0.03)


@pytest.fixture
def trained_tiny_vae(synthetic_mnist, make_trainer):
    L.seed_everything(0, verbose=False)
    model = VAE(**TINY_VAE)
    make_trainer(max_epochs=3, limit_val_batches=0).fit(
        model, MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="unit")
    )
    return model.eval()


def test_importance_weighted_bound_is_above_the_elbo_and_tightens_with_k(trained_tiny_vae, synthetic_mnist):
    dm = MNISTDataModule(data_dir=str(synthetic_mnist), normalization="unit", val_size=0)
    dm.setup("test")
    images = dm.normalize(dm.split_tensors("test")[0])
    x = trained_tiny_vae.fixed_binarization(images, 0)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([trained_tiny_vae.elbo(x)["elbo"] for _ in range(200)]).mean()
        bounds = {
            k: torch.stack([trained_tiny_vae.importance_weighted_bound(x, k) for _ in range(20)]).mean() for k in (1, 10, 100)
        }
    assert bounds[1].item() == pytest.approx(elbo.item(), abs=0.5)  # k = 1 is the ELBO, in expectation
    assert bounds[1] < bounds[10] < bounds[100] and bounds[100] > elbo + 1.0


def test_the_test_step_reports_the_bound_as_nll_in_nats(trained_tiny_vae, synthetic_mnist, make_trainer):
    trained_tiny_vae.hparams.test_samples = 20
    results = make_trainer().test(
        trained_tiny_vae, MNISTDataModule(data_dir=str(synthetic_mnist), normalization="unit", val_size=0), verbose=False
    )[0]
    assert 0 < results["test/nll"] < -results["test/elbo"] + 1e-3  # the bound is tighter than the ELBO


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent_dim": 0}, "model.latent_dim"),
        ({"test_samples": 0}, "model.test_samples"),
        ({"hidden": (0,)}, "model.hidden"),
        ({"activation": "sine"}, "model.activation"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VAE(**kwargs)


def test_a_test_of_trained_weights_takes_the_importance_samples_it_is_given(real_mnist, tmp_path, monkeypatch):
    """Lightning replaces the config's model settings by the checkpoint's; ``test_samples`` is an
    evaluation setting, so ``train.py test --model.init_args.test_samples K`` must measure with K."""
    monkeypatch.chdir(tmp_path)
    data = ["--data.init_args.data_dir", str(real_mnist), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    checkpoint = '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": "link"}}]'
    main(["fit", "--config", str(ROOT / "configs/vae_mnist.yaml"), *data,
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "20", "--trainer.limit_val_batches", "0",
          "--trainer.callbacks", checkpoint])  # fmt: skip
    nll = {}
    for k in (1, 100):
        torch.manual_seed(0)
        cli = main(
            [
                "test",
                "--config",
                str(ROOT / "configs/vae_mnist.yaml"),
                *data,
                "--ckpt_path",
                "last",
                "--model.init_args.test_samples",
                str(k),
                "--trainer.limit_test_batches",
                "2",
            ]
        )
        assert cli.model.hparams.test_samples == k
        nll[k] = cli.trainer.callback_metrics["test/nll"].item()
    assert nll[100] < nll[1] - 1.0  # k = 1 is the ELBO; 100 samples tighten the bound by nats


def test_a_stored_encoder_gives_the_trained_vae_posterior_means_and_only_a_vae_is_stored(
    synthetic_mnist, make_trainer, tmp_path, monkeypatch
):
    monkeypatch.setattr(export, "PRETRAINED_DIR", tmp_path / "pretrained")
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=0, enable_checkpointing=True, callbacks=[checkpoint]
    )
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), normalization="unit", batch_size=32, val_size=0)
    trainer.fit(VAE(latent_dim=4, hidden=(16,)), datamodule)
    with pytest.raises(ConfigError, match="does not record its datamodule .* name the dataset with --dataset"):
        export.store_encoder(tmp_path / "checkpoints" / "last.ckpt")  # trained in-process, not by train.py
    assert "vae_encoder_mnist.pt written: the 4-latent encoder" in export.store_encoder(
        tmp_path / "checkpoints" / "last.ckpt", "mnist"
    )
    encoder, meta = load_encoder(tmp_path / "pretrained" / "vae_encoder_mnist.pt")
    images = torch.rand(5, 1, 28, 28)
    expected = VAE.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").encode(images)
    assert (
        torch.equal(encoder(images), expected)
        and meta["dataset_name"] == "mnist"
        and not any(p.requires_grad for p in encoder.parameters())
    )
    torch.save({"hyper_parameters": {"latent_dim": 100, "generator_hidden": [256]}}, tmp_path / "gan.ckpt")
    with pytest.raises(ConfigError, match="not a checkpoint of a VAE"):
        export.store_encoder(tmp_path / "gan.ckpt", "mnist")
    with pytest.raises(ConfigError, match="vae_encoder_fashion_mnist.pt not found: store one with"):
        load_encoder(tmp_path / "pretrained" / "vae_encoder_fashion_mnist.pt")


def test_the_epoch_elbo_is_the_mean_of_the_steps_elbos(synthetic_mnist, fit_tiny):
    """``train/elbo`` (summed on the device, handed over where the epoch may end) is the mean over the epoch's
    steps of each step's ELBO (minus its loss, with the KL weight 1); ``kl_weight`` is logged once an epoch."""
    losses = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="unit")
    trainer, _ = fit_tiny(lambda: VAE(hidden=(32,), latent_dim=4), datamodule, max_epochs=2, callbacks=[Losses()])
    assert len(losses) == 16
    assert float(trainer.callback_metrics["train/elbo"]) == pytest.approx(-sum(losses[8:]) / 8, rel=1e-6)
    assert float(trainer.callback_metrics["kl_weight"]) == 1.0
