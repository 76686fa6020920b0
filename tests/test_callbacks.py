"""Sample grids, learning curves and seeding, on tiny in-process runs."""

from functools import partial

import pytest
import torch
from PIL import Image

from callbacks import EpochSeed, LearningCurves, SampleGrid
from callbacks.plots import TITLE_STRIP_PIXELS
from datamodules import MNISTDataModule
from lightning_modules import GAN
from tests.conftest import TINY_GAN

TINY = partial(GAN, **TINY_GAN)


def mnist(data_root) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=16, val_size=0)


def test_grids_at_chosen_epochs_and_at_the_end(synthetic_mnist, fit_tiny, tmp_path):
    grid = SampleGrid(epochs=[1, 2], num_samples=12, nrow=4)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=4, limit_train_batches=2, callbacks=[grid])
    saved = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert saved == ["epoch_001.png", "epoch_002.png", "epoch_004.png"]
    with Image.open(tmp_path / "samples" / "epoch_004.png") as grid:  # 12 images, 4 per row, 2-pixel padding, under the title
        assert grid.size[1] == TITLE_STRIP_PIXELS + 3 * 28 + 4 * 2 and grid.size[0] >= 4 * 28 + 5 * 2


def test_grid_when_max_steps_ends_training_mid_epoch(synthetic_mnist, fit_tiny, tmp_path):
    grid = SampleGrid(epochs=[], num_samples=4)
    # 2 optimizer steps per batch: stops after batch 1 of epoch 2
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=5, max_steps=6, limit_train_batches=2, callbacks=[grid])
    assert [p.name for p in (tmp_path / "samples").iterdir()] == ["step_0000006.png"]


def test_grid_uses_the_same_noise_every_time(synthetic_mnist, fit_tiny):
    grid = SampleGrid(epochs=[1], num_samples=4, seed=3)
    _, model = fit_tiny(TINY, mnist(synthetic_mnist), limit_train_batches=2, callbacks=[grid])
    expected = model.sample_latent(4, torch.Generator().manual_seed(3))
    assert torch.equal(grid.inputs[0], expected) and grid.inputs[1] is None


def test_learning_curves_png_and_history(synthetic_mnist, fit_tiny, tmp_path):
    curves = LearningCurves(panels={"loss": ["train/d_loss", "train/g_loss"], "grad": ["train/g_grad_norm"]}, log_scale=["grad"])
    trainer, _ = fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=3, limit_train_batches=2, callbacks=[curves])
    assert [epoch for epoch, _ in curves.history["train/g_loss"]] == [1, 2, 3]
    assert curves.history["train/d_loss"][-1][1] == pytest.approx(trainer.callback_metrics["train/d_loss_epoch"].item())
    with Image.open(tmp_path / "learning_curves.png") as image:
        assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
    restored = LearningCurves()
    restored.load_state_dict(curves.state_dict())
    assert restored.history == curves.history


@pytest.mark.parametrize("redraw_seconds, draws", [(0, 4), (3600, 2)])
def test_learning_curves_redraw_at_most_every_redraw_seconds_and_at_the_end(
    synthetic_mnist, fit_tiny, tmp_path, monkeypatch, redraw_seconds, draws
):
    drawn = []
    monkeypatch.setattr(
        LearningCurves, "draw", lambda self, path: drawn.append(self.history["train/d_loss"][-1][0]) or open(path, "wb").close()
    )
    curves = LearningCurves(redraw_seconds=redraw_seconds)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=3, limit_train_batches=2, callbacks=[curves])
    assert len(drawn) == draws and drawn[-1] == 3  # the last figure has every epoch
    assert (tmp_path / "learning_curves.png").exists()


def test_epoch_seed_differs_per_rank_and_epoch_and_repeats():
    seed = EpochSeed(seed=42)
    seeds = {seed.epoch_seed(epoch, rank) for epoch in range(50) for rank in range(8)}
    assert len(seeds) == 400
    assert seed.epoch_seed(3, 1) == EpochSeed(seed=42).epoch_seed(3, 1)
