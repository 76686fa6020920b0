"""The latent-space callbacks on tiny in-process autoencoder runs, and their k-NN measure on hand-made codes."""

import json
from collections import Counter
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from torch import nn

from callbacks import Interpolation, LatentManifold, LatentSpace, PriorSamples, Reconstructions, TestSplitMetrics
from callbacks.autoencoder_figures import pairs_of_different_classes
from callbacks.plots import TITLE_STRIP_PIXELS
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import VAE, Autoencoder
from lightning_modules.components.confusion import knn_confusion, most_confused_pairs

DIGITS = [str(digit) for digit in range(10)]


class TinyAutoencoder(L.LightningModule):
    """The latent-space interface at its smallest: one linear layer each way, sigmoid output."""

    def __init__(self, code_size: int = 2) -> None:
        super().__init__()
        self.code_size = code_size
        self.encoder = nn.Linear(28 * 28, code_size)
        self.decoder = nn.Linear(code_size, 28 * 28)

    def encode(self, images):
        return self.encoder(images.flatten(1))

    def decode(self, codes):
        return torch.sigmoid(self.decoder(codes)).view(-1, 1, 28, 28)

    def training_step(self, batch, batch_idx):
        images, _ = batch
        return F.mse_loss(self.decode(self.encode(images)), images)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class TinyVAE(TinyAutoencoder):
    """What makes a VAE for the callbacks: codes drawn from the prior N(0, I)."""

    def sample_prior(self, num_samples, rng):
        return torch.randn(num_samples, self.code_size, generator=rng)


def mnist(data_root) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=16, val_size=0, normalization="unit")


def png_pixels(path):
    """A saved grayscale grid as floats in [0, 1], ``(H, W)``."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("L"))).float() / 255


def titled_grid_pixels(path, width):
    """The grid of a PNG saved by :func:`callbacks.plots.save_titled_grid` without row names: below the
    title strip, its first ``width`` columns."""
    return png_pixels(path)[TITLE_STRIP_PIXELS:, :width]


def cell(pixels, row, column, padding):
    """The 28x28 image at ``(row, column)`` of a grid with ``padding`` pixels between images."""
    top, left = padding + row * (28 + padding), padding + column * (28 + padding)
    return pixels[top : top + 28, left : left + 28]


@torch.no_grad()
def decoded(model, codes):
    return model.decode(torch.as_tensor(codes, dtype=torch.float32)).squeeze(1)


def test_reconstructions_at_chosen_epochs_and_at_the_end_with_originals_above_reconstructions(
    synthetic_mnist, fit_tiny, tmp_path
):
    reconstructions = Reconstructions(epochs=[1], num_images=6, nrow=4, seed=3)
    trainer, model = fit_tiny(
        TinyAutoencoder, mnist(synthetic_mnist), max_epochs=3, limit_train_batches=2, callbacks=[reconstructions]
    )
    assert sorted(p.name for p in (tmp_path / "reconstructions").iterdir()) == ["epoch_001.png", "epoch_003.png"]
    assert torch.equal(reconstructions.indices, torch.randperm(64, generator=torch.Generator().manual_seed(3))[:6])
    grid = reconstructions.grid(trainer, model)
    assert grid.shape == (3, 4 * 28 + 5 * 2, 4 * 28 + 5 * 2)  # 2 rows of originals, each followed by a row of reconstructions
    images = trainer.datamodule.split_tensors("test")[0][reconstructions.indices].float() / 255
    original_rows, reconstruction_rows = [0, 0, 0, 0, 2, 2], [1, 1, 1, 1, 3, 3]
    for i, image in enumerate(images):
        assert torch.equal(cell(grid[0], original_rows[i], i % 4, 2), image[0])
        assert torch.allclose(
            cell(grid[0], reconstruction_rows[i], i % 4, 2), decoded(model, model.encode(image[None]))[0], atol=1e-6
        )
    assert (cell(grid[0], 2, 3, 2) == 1).all() and (cell(grid[0], 3, 3, 2) == 1).all()  # the short last rows end blank


@pytest.mark.parametrize("code_size", [2, 3])
@pytest.mark.filterwarnings(
    "ignore:Experiment logs directory .* exists and is not empty"
)  # the final_metrics.json written before
def test_latent_space_logs_knn_accuracy_draws_and_merges_final_metrics(synthetic_mnist, fit_tiny, tmp_path, code_size):
    run = tmp_path / "run" / "version_0"
    run.mkdir(parents=True)
    (run / "final_metrics.json").write_text(json.dumps({"fid": 12.5, "epoch": 0}))
    logger = CSVLogger(tmp_path, name="run", version=0)
    fit_tiny(
        partial(TinyAutoencoder, code_size),
        mnist(synthetic_mnist),
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[LatentSpace(num_points=50, neighbours=3, every_n_epochs=1)],
        logger=logger,
        log_every_n_steps=1,
    )
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["fid"] == 12.5 and final["epoch"] == 0  # written before, kept
    confusion = torch.tensor(final["latent_confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 25  # scored on half of the 50 codes
    assert final["latent_knn_accuracy"] == pytest.approx(confusion.diag().sum().item() / 25)
    assert final["latent_confused_pairs"] == most_confused_pairs(confusion, DIGITS)
    logged = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    column = logged[0].index("latent/knn_accuracy")
    assert len([row for row in logged[1:] if row[column]]) == 2  # every epoch; the end adds nothing new at the same step
    assert (run / "latent_confusion.png").is_file()
    assert (run / "latent_space.png").is_file() == (code_size == 2)


def clusters(centres, per_class, spread, seed):
    """``per_class`` codes around each class's centre, and their labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=generator), labels


def test_knn_is_perfect_on_separated_clusters():
    centres = 10 * torch.stack([torch.arange(10.0), torch.arange(10.0) % 3], dim=1)
    train_codes, train_labels = clusters(centres, 20, 0.5, seed=0)
    test_codes, test_labels = clusters(centres, 15, 0.5, seed=1)
    confusion = knn_confusion(train_codes, train_labels, test_codes, test_labels, k=5, num_classes=10)
    assert torch.equal(confusion, torch.diag(torch.full((10,), 15)))
    assert most_confused_pairs(confusion, DIGITS) == []


def test_knn_confuses_classes_that_share_a_cluster():
    centres = 10 * torch.stack([torch.arange(10.0), torch.zeros(10)], dim=1)
    centres[9] = centres[4]
    train_codes, train_labels = clusters(centres, 200, 1.0, seed=0)
    test_codes, test_labels = clusters(centres, 200, 1.0, seed=1)
    confusion = knn_confusion(train_codes, train_labels, test_codes, test_labels, k=10, num_classes=10)
    assert confusion.diag().sum().item() / confusion.sum().item() == pytest.approx(0.9, abs=0.03)  # 4 and 9 right half the time
    pairs = most_confused_pairs(confusion, DIGITS)
    assert len(pairs) == 1 and pairs[0][:2] == ["4", "9"] and pairs[0][2] == confusion[4, 9] + confusion[9, 4]


def brute_force_knn(train_codes, train_labels, code, k):
    """The vote as written in the docstring: majority, then nearer votes (smaller rank sum), then lower class."""
    distances = [((code - other) ** 2).sum().sqrt().item() for other in train_codes]
    nearest = sorted(range(len(distances)), key=distances.__getitem__)[:k]
    counts, rank_sums = Counter(), Counter()
    for rank, index in enumerate(nearest):
        label = train_labels[index].item()
        counts[label] += 1
        rank_sums[label] += rank
    return min(counts, key=lambda label: (-counts[label], rank_sums[label], label))


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_knn_agrees_with_a_brute_force_vote(k):
    generator = torch.Generator().manual_seed(k)
    train_codes, test_codes = torch.randn(80, 3, generator=generator), torch.randn(40, 3, generator=generator)
    train_labels, test_labels = torch.randint(0, 4, (80,), generator=generator), torch.randint(0, 4, (40,), generator=generator)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for code, label in zip(test_codes, test_labels):
        expected[label, brute_force_knn(train_codes, train_labels, code, k)] += 1
    assert torch.equal(knn_confusion(train_codes, train_labels, test_codes, test_labels, k, num_classes=4), expected)


@pytest.mark.parametrize("model_class", [TinyAutoencoder, TinyVAE])
def test_manifold_spans_the_prior_quantiles_or_the_test_codes_first_code_rightwards_second_upwards(
    synthetic_mnist, fit_tiny, tmp_path, model_class
):
    trainer, model = fit_tiny(model_class, mnist(synthetic_mnist), limit_train_batches=2, callbacks=[LatentManifold(grid_size=5)])
    pixels = titled_grid_pixels(tmp_path / "latent_manifold.png", 5 * 28)
    assert pixels.shape == (5 * 28, 5 * 28)
    if isinstance(model, TinyVAE):
        low, high = torch.full((2,), -1.6449), torch.full((2,), 1.6449)  # N(0, 1) quantiles 0.05, 0.95
    else:
        with torch.no_grad():
            codes = model.encode(trainer.datamodule.split_tensors("test")[0].float() / 255)
        low, high = torch.quantile(codes, torch.tensor([0.01, 0.99]), dim=0)
    corners = {(0, 0): [low[0], high[1]], (0, 4): [high[0], high[1]], (4, 0): [low[0], low[1]], (4, 4): [high[0], low[1]]}
    for (row, column), code in corners.items():
        assert torch.allclose(cell(pixels, row, column, 0), decoded(model, [code])[0], atol=1 / 255 + 1e-4)


def test_manifold_draws_nothing_for_codes_that_are_not_2d(synthetic_mnist, fit_tiny, tmp_path, caplog):
    fit_tiny(partial(TinyAutoencoder, code_size=3), mnist(synthetic_mnist), limit_train_batches=2, callbacks=[LatentManifold()])
    assert not (tmp_path / "latent_manifold.png").exists()
    assert "the code has 3 dimensions, not 2; no latent_manifold.png" in caplog.text


def test_prior_samples_decode_the_seeded_prior(synthetic_mnist, fit_tiny, tmp_path):
    prior = PriorSamples(num_samples=12, nrow=8, seed=5)
    _, model = fit_tiny(TinyVAE, mnist(synthetic_mnist), limit_train_batches=2, callbacks=[prior])
    pixels = titled_grid_pixels(tmp_path / "samples" / "prior.png", 8 * 28 + 9 * 2)
    assert pixels.shape == (2 * 28 + 3 * 2, 8 * 28 + 9 * 2)
    codes = model.sample_prior(12, torch.Generator().manual_seed(5))
    assert torch.allclose(cell(pixels, 1, 3, 2), decoded(model, codes)[11], atol=1 / 255 + 1e-4)


def test_prior_samples_refuse_a_model_without_a_prior(synthetic_mnist, fit_tiny):
    with pytest.raises(ConfigError, match="TinyAutoencoder has none \\(no sample_prior\\)"):
        fit_tiny(TinyAutoencoder, mnist(synthetic_mnist), limit_train_batches=2, callbacks=[PriorSamples()])


def test_pairs_are_disjoint_and_of_different_classes():
    labels = torch.arange(64) % 10
    starts, ends = pairs_of_different_classes(labels, 20, torch.Generator().manual_seed(0))
    assert len(starts) == 20 and (labels[starts] != labels[ends]).all()
    assert len(set(starts.tolist()) | set(ends.tolist())) == 40


def test_interpolation_rows_run_from_one_reconstruction_to_the_other(synthetic_mnist, fit_tiny, tmp_path):
    interpolation = Interpolation(steps=5, pairs=3, seed=2)
    trainer, model = fit_tiny(TinyAutoencoder, mnist(synthetic_mnist), limit_train_batches=2, callbacks=[interpolation])
    pixels = titled_grid_pixels(tmp_path / "interpolation.png", 5 * 28 + 6 * 2)
    assert pixels.shape == (3 * 28 + 4 * 2, 5 * 28 + 6 * 2)
    images, labels = trainer.datamodule.split_tensors("test")
    starts, ends = pairs_of_different_classes(labels, 3, torch.Generator().manual_seed(2))
    start_codes, end_codes = (model.encode(images[indices].float() / 255).detach() for indices in (starts, ends))
    for row in range(3):
        assert torch.allclose(cell(pixels, row, 0, 2), decoded(model, start_codes[row : row + 1])[0], atol=1 / 255 + 1e-4)
        assert torch.allclose(
            cell(pixels, row, 2, 2),
            decoded(model, (start_codes[row : row + 1] + end_codes[row : row + 1]) / 2)[0],
            atol=1 / 255 + 1e-4,
        )
        assert torch.allclose(cell(pixels, row, 4, 2), decoded(model, end_codes[row : row + 1])[0], atol=1 / 255 + 1e-4)


def test_callbacks_refuse_a_run_without_an_image_datamodule(make_trainer):
    trainer = make_trainer(max_epochs=1, callbacks=[Reconstructions()])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.int64)), batch_size=4
    )
    with pytest.raises(ConfigError, match="Reconstructions needs an image datamodule"):
        trainer.fit(TinyAutoencoder(), loader)


@pytest.mark.parametrize("model_class", [Autoencoder, VAE])
def test_test_split_metrics_during_fit_equal_those_of_trainer_test(model_class, synthetic_mnist, make_trainer, tmp_path):
    L.seed_everything(0, verbose=False)
    model = model_class(
        **(
            {"latent_dim": 2, "hidden": [16], "test_samples": 10}
            if model_class is VAE
            else {"encoder_hidden": [16], "decoder_hidden": [16]}
        )
    )
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=16, val_size=0, normalization="unit")
    callback = TestSplitMetrics(every_n_epochs=1)
    trainer = make_trainer(max_epochs=2, limit_train_batches=2, callbacks=[callback])
    trainer.fit(model, datamodule)
    torch.manual_seed(0)  # the VAE's importance samples: the same draws in both measurements
    measured_in_fit = callback.measure(trainer, model)
    torch.manual_seed(0)
    tested = trainer.test(model, datamodule, verbose=False)[0]
    assert measured_in_fit.keys() == {name.removeprefix("test/") for name in tested}
    for name, value in measured_in_fit.items():
        assert value == pytest.approx(tested[f"test/{name}"], rel=1e-5), name
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert {f"test_{name}" for name in measured_in_fit} <= final.keys()


def test_under_fast_dev_run_test_split_metrics_measure_the_batch_trainer_test_would(synthetic_mnist, make_trainer):
    """A smoke run checks the measurement's path on one batch, not the whole split (minutes for an IWAE)."""
    L.seed_everything(0, verbose=False)
    model = Autoencoder(encoder_hidden=[16], decoder_hidden=[16])
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=16, val_size=0, normalization="unit")
    callback = TestSplitMetrics(every_n_epochs=1)
    trainer = make_trainer(fast_dev_run=True, callbacks=[callback])
    trainer.fit(model, datamodule)
    assert datamodule.split_size("test") > 16
    tested = trainer.test(model, datamodule, verbose=False)[0]  # fast_dev_run: the first test batch only
    assert callback.last["mse"] == pytest.approx(tested["test/mse"], rel=1e-5)
    images, labels = datamodule.split_tensors("test")
    with torch.no_grad():
        whole = model.eval().test_metrics((datamodule.normalize(images), labels), 0)["mse"].item()
    assert whole != pytest.approx(callback.last["mse"], rel=1e-3)  # not the whole split's
