"""The autoencoders on real MNIST: the linear one reaches PCA, denoising pays off under noise; the
corruption, the logged metrics and bad settings."""

import math
from functools import partial

import lightning as L
import pytest
import torch

from benchmarks.pca_baseline import pca_test_mse
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import Autoencoder


def mnist(root, train_size: int, batch_size: int = 256) -> MNISTDataModule:
    """The first ``train_size`` training images (the rest held out, unused) and the 10,000 test images."""
    return MNISTDataModule(data_dir=str(root), batch_size=batch_size, normalization="unit", val_size=60_000 - train_size)


def test_linear_autoencoder_reaches_the_pca_reconstruction_error(real_mnist, fit_tiny):
    datamodule = mnist(real_mnist, train_size=10_000)
    linear = partial(
        Autoencoder,
        code_size=2,
        encoder_hidden=[],
        decoder_hidden=[],
        activation="identity",
        loss="mse",
        lr=1e-2,
        anneal_lr=True,
        test_noise_stds=[],
    )
    trainer, model = fit_tiny(linear, datamodule, max_epochs=80, limit_val_batches=0)
    (tested,) = trainer.test(model, datamodule, verbose=False)
    assert tested["test/mse"] == pytest.approx(pca_test_mse(datamodule, [2])[2], rel=0.005)


def test_denoising_autoencoder_beats_the_plain_one_on_noisy_inputs(real_mnist, fit_tiny):
    datamodule = mnist(real_mnist, train_size=20_000, batch_size=128)
    settings = {"code_size": 32, "encoder_hidden": [256], "decoder_hidden": [256], "test_noise_stds": [0.5]}
    plain_trainer, plain_model = fit_tiny(partial(Autoencoder, **settings), datamodule, max_epochs=2, limit_val_batches=0)
    (plain,) = plain_trainer.test(plain_model, datamodule, verbose=False)
    denoising_trainer, denoising_model = fit_tiny(
        partial(Autoencoder, noise_std=0.5, **settings), datamodule, max_epochs=2, limit_val_batches=0
    )
    (denoising,) = denoising_trainer.test(denoising_model, datamodule, verbose=False)
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


class RecordLearningRate(L.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_annealed_learning_rate_follows_the_cosine_to_zero_over_every_step(synthetic_mnist, make_trainer):
    datamodule = MNISTDataModule(
        data_dir=str(synthetic_mnist), batch_size=32, normalization="unit", val_size=0
    )  # 8 steps per epoch
    record = RecordLearningRate()
    trainer = make_trainer(max_epochs=3, limit_val_batches=0, callbacks=[record])
    model = Autoencoder(encoder_hidden=[8], decoder_hidden=[8], lr=0.01, anneal_lr=True)
    trainer.fit(model, datamodule)
    steps = 24
    expected = [0.01 * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert record.rates == pytest.approx(expected, abs=1e-9)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_annealing_a_run_of_unknown_length_names_the_fix(synthetic_mnist, make_trainer):
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, normalization="unit", val_size=0)
    trainer = make_trainer(max_epochs=-1, max_time={"seconds": 5}, limit_val_batches=0)
    with pytest.raises(
        ConfigError, match="model.anneal_lr needs a run of known length: set trainer.max_epochs or trainer.max_steps"
    ):
        trainer.fit(Autoencoder(encoder_hidden=[8], decoder_hidden=[8], anneal_lr=True), datamodule)


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
