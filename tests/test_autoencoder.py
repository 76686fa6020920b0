"""The autoencoders on real MNIST: the linear one reaches PCA, denoising pays off under noise; the
corruption, the logged metrics and bad settings."""

import lightning as L
import pytest
import torch

from benchmarks.pca_baseline import pca_test_mse
from datamodules import MNISTDataModule
from lightning_modules import Autoencoder
from lightning_modules.errors import ConfigError


def mnist(root, train_size: int, batch_size: int = 256) -> MNISTDataModule:
    """The first ``train_size`` training images (the rest held out, unused) and the 10,000 test images."""
    return MNISTDataModule(data_dir=str(root), batch_size=batch_size, normalization="unit", val_size=60_000 - train_size)


def fit_and_test(make_trainer, datamodule, max_epochs, **model_kwargs) -> dict[str, float]:
    L.seed_everything(0, verbose=False)
    model = Autoencoder(**model_kwargs)
    trainer = make_trainer(max_epochs=max_epochs, limit_val_batches=0)
    trainer.fit(model, datamodule)
    return trainer.test(model, datamodule, verbose=False)[0]


@pytest.mark.slow  # ~1,200 optimizer steps on real MNIST
def test_linear_autoencoder_reaches_the_pca_reconstruction_error(real_mnist, make_trainer):
    datamodule = mnist(real_mnist, train_size=10_000)
    linear = fit_and_test(make_trainer, datamodule, 30, code_size=2, encoder_hidden=[], decoder_hidden=[], activation="identity", loss="mse", lr=1e-2, test_noise_stds=[])
    assert linear["test/mse"] == pytest.approx(pca_test_mse(datamodule, [2])[2], rel=0.02)


@pytest.mark.slow  # two short trainings on real MNIST
def test_denoising_autoencoder_beats_the_plain_one_on_noisy_inputs(real_mnist, make_trainer):
    datamodule = mnist(real_mnist, train_size=20_000, batch_size=128)
    settings = {"code_size": 32, "encoder_hidden": [256], "decoder_hidden": [256], "test_noise_stds": [0.5]}
    plain = fit_and_test(make_trainer, datamodule, 2, **settings)
    denoising = fit_and_test(make_trainer, datamodule, 2, noise_std=0.5, **settings)
    assert denoising["test/mse_sigma_0.5"] < 0.9 * plain["test/mse_sigma_0.5"]
    assert plain["test/mse"] < plain["test/mse_sigma_0.5"]  # noise hurts the plain one


def test_corruption_is_gaussian_with_the_given_sigma_and_the_target_stays_clean():
    model = Autoencoder(noise_std=0.3)
    images = torch.rand(64, 1, 28, 28)
    noise = model.corrupt(images, 0.3) - images
    assert noise.std().item() == pytest.approx(0.3, rel=0.02) and abs(noise.mean().item()) < 0.01
    assert model.corrupt(images, 0.0) is images


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_decode_gives_images_and_the_mse_metric_is_per_pixel(loss):
    model = Autoencoder(code_size=3, loss=loss, encoder_hidden=[8], decoder_hidden=[8])
    images = torch.rand(5, 1, 28, 28)
    assert model.encode(images).shape == (5, 3) and model.decode(model.encode(images)).shape == (5, 1, 28, 28)
    _, mse = model.reconstruction_loss(images, images)
    torch.testing.assert_close(mse, (model.decode(model.encode(images)) - images).square().mean())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"code_size": 0}, "model.code_size must be an integer >= 1, got 0"),
        ({"noise_std": -0.1}, "model.noise_std and model.test_noise_stds must be >= 0"),
        ({"loss": "l1"}, "model.loss must be 'bce' or 'mse'"),
        ({"activation": "sine"}, "model.activation must be one of"),
        ({"encoder_hidden": [0]}, "model.encoder_hidden must be positive layer widths"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Autoencoder(**kwargs)
