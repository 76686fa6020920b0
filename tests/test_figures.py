"""Figures that stand alone: grids titled with experiment, epoch and step, and learning curves with
the family's quality panel, whichever callback logs its metric and whenever."""

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from torchvision.utils import make_grid

import callbacks.autoencoder_figures
import callbacks.learning_curves
import callbacks.plots
import callbacks.sample_grid
from callbacks import Interpolation, LearningCurves, PriorSamples, Reconstructions, SampleGrid
from callbacks.plots import TITLE_STRIP_PIXELS, experiment_name, grid_title, save_titled_grid
from callbacks.run_outputs import eval_mode, log_scalars
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import GAN, VAE
from tests.conftest import TINY_GAN

TINY = partial(GAN, **TINY_GAN)


def mnist(data_root, **options) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=16, val_size=0, **options)


def as_png_pixels(grid: torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` uint8: what ``torchvision.utils.save_image`` writes of a ``(3, H, W)`` grid in [0, 1]."""
    return grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image.convert("RGB"))


def recording(monkeypatch, module, titles: list[str]) -> None:
    """Record the title of every grid ``module`` saves, and save it."""
    real = save_titled_grid
    monkeypatch.setattr(module, "save_titled_grid", lambda grid, title, *args: titles.append(title) or real(grid, title, *args))


@pytest.mark.parametrize("channels", [3, 1])
def test_a_titled_grid_keeps_its_pixels_under_a_title_strip(tmp_path, channels):
    grid = torch.rand(channels, 62, 92, generator=torch.Generator().manual_seed(0))
    save_titled_grid(grid, grid_title("gan_mnist", 3, 1200), tmp_path / "grid.png")
    pixels = png(tmp_path / "grid.png")
    assert pixels.shape[0] == 62 + TITLE_STRIP_PIXELS and pixels.shape[1] >= 92
    assert np.array_equal(pixels[TITLE_STRIP_PIXELS:, :92], as_png_pixels(grid.expand(3, -1, -1)))
    assert (pixels[:TITLE_STRIP_PIXELS] < 128).any()  # the title's text is drawn in the strip


def test_a_labelled_grid_has_its_names_left_of_the_pixels_and_the_title_above(tmp_path):
    grid = torch.rand(3, 302, 302, generator=torch.Generator().manual_seed(1))
    save_titled_grid(grid, grid_title("cgan_fashion_mnist", 1, 938), tmp_path / "grid.png", [f"class {i}" for i in range(10)])
    pixels = png(tmp_path / "grid.png")
    assert pixels.shape[0] == 302 + TITLE_STRIP_PIXELS and pixels.shape[1] > 302  # the names widen it
    assert np.array_equal(pixels[TITLE_STRIP_PIXELS:, -302:], as_png_pixels(grid))
    assert (pixels[TITLE_STRIP_PIXELS:, :-302] < 128).any()  # the row names
    assert (pixels[:TITLE_STRIP_PIXELS] < 128).any()


def test_the_title_names_the_experiment_epoch_and_step():
    assert grid_title("gan_mnist", 12, 11256) == "gan_mnist · epoch 12 · step 11256"


def test_the_experiment_is_the_first_loggers_name_else_the_run_folders_parent(tmp_path):
    named = L.Trainer(logger=CSVLogger(tmp_path, name="gan_mnist"), default_root_dir=tmp_path, enable_progress_bar=False)
    assert experiment_name(named) == "gan_mnist"
    run_folder = tmp_path / "runs" / "wgan_ring8_none" / "version_0"
    unnamed = L.Trainer(logger=False, default_root_dir=run_folder, enable_progress_bar=False)
    assert experiment_name(unnamed) == "wgan_ring8_none"
    unversioned = L.Trainer(logger=False, default_root_dir=tmp_path / "smoke_test", enable_progress_bar=False)
    assert experiment_name(unversioned) == "smoke_test"


def test_sample_grids_are_titled_and_keep_the_generated_pixels(synthetic_mnist, fit_tiny, tmp_path, monkeypatch):
    titles = []
    recording(monkeypatch, callbacks.sample_grid, titles)
    grid = SampleGrid(epochs=[1], num_samples=12, nrow=4)
    logger = CSVLogger(tmp_path, name="gan_mnist", version=0)
    trainer, model = fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=2, limit_train_batches=2, callbacks=[grid], logger=logger)
    assert titles == ["gan_mnist · epoch 1 · step 4", "gan_mnist · epoch 2 · step 8"]  # 2 optimizer steps a batch
    z, labels = grid.inputs
    with torch.no_grad(), eval_mode(model):
        images = trainer.datamodule.denormalize(model.generate(z, labels))
    bare = make_grid(images, nrow=4, padding=2, pad_value=1.0)
    pixels = png(tmp_path / "gan_mnist" / "version_0" / "samples" / "epoch_002.png")
    assert pixels.shape[0] == bare.shape[1] + TITLE_STRIP_PIXELS  # the bare grid and the title strip
    assert np.abs(pixels[TITLE_STRIP_PIXELS:, : bare.shape[2]].astype(int) - as_png_pixels(bare)).max() <= 1


def test_autoencoder_grids_are_titled_with_the_epoch_and_step_they_show(synthetic_mnist, fit_tiny, tmp_path, monkeypatch):
    titles = []
    recording(monkeypatch, callbacks.autoencoder_figures, titles)
    figures = [Reconstructions(epochs=[1], num_images=4, nrow=4), PriorSamples(num_samples=4), Interpolation(steps=3, pairs=2)]
    fit_tiny(
        partial(VAE, latent_dim=2, hidden=(16,), test_samples=2, test_chunk=2),
        mnist(synthetic_mnist, normalization="unit"),
        max_epochs=2,
        limit_train_batches=2,
        callbacks=figures,
        logger=CSVLogger(tmp_path, name="vae_mnist", version=0),
    )
    # reconstructions after epochs 1 and 2, then prior samples and interpolations when training ends
    assert titles == ["vae_mnist · epoch 1 · step 2"] + ["vae_mnist · epoch 2 · step 4"] * 3


def fid(epoch: int) -> float:
    """A stand-in FID that falls with the epoch, exact in float32 (the trainer's metrics hold float32)."""
    return 100 / 2**epoch


class MeasureAfterwards(L.Callback):
    """A measuring callback placed after LearningCurves: logs ``quality/fid`` = :func:`fid` at the end
    of every ``every``-th epoch, and when training ends unless that step was measured."""

    def __init__(self, every: int = 1) -> None:
        self.every = every
        self.measured_at_step = None

    def measure(self, trainer: L.Trainer, epoch: int) -> None:
        log_scalars(trainer, {"quality/fid": fid(epoch)})
        self.measured_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every == 0:
            self.measure(trainer, trainer.current_epoch + 1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.measured_at_step != trainer.global_step:
            self.measure(trainer, trainer.current_epoch)


PANELS = {"loss": ["train/d_loss", "train/g_loss"], "FID": ["quality/fid"]}


def drawn_panels(monkeypatch) -> list[dict]:
    """The panels of every learning-curve figure drawn from now on (nothing is written)."""
    drawn = []
    monkeypatch.setattr(
        callbacks.learning_curves,
        "draw_panels",
        lambda path, panels, **options: drawn.append(
            {title: {name: list(points) for name, points in curves.items()} for title, curves in panels.items()}
        ),
    )
    return drawn


@pytest.mark.parametrize("max_epochs", [1, 2])
def test_learning_curves_catch_a_measurement_logged_after_them(synthetic_mnist, fit_tiny, monkeypatch, max_epochs):
    drawn = drawn_panels(monkeypatch)
    curves = LearningCurves(panels=PANELS, redraw_seconds=0)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=max_epochs, limit_train_batches=2, callbacks=[curves, MeasureAfterwards()])
    expected = [(epoch, fid(epoch)) for epoch in range(1, max_epochs + 1)]
    assert curves.history["quality/fid"] == expected
    assert [epoch for epoch, _ in curves.history["train/d_loss"]] == list(range(1, max_epochs + 1))
    # drawn after each epoch (the measurement of an epoch's end comes after this figure) and when fitting ends
    assert [figure["FID"]["quality/fid"] for figure in drawn] == [expected[: epoch - 1] for epoch in range(1, max_epochs + 1)] + [
        expected
    ]
    assert drawn[-1]["loss"]["d_loss"] == curves.history["train/d_loss"]


def test_a_measurement_every_few_epochs_and_at_the_end_appears_once_per_epoch(synthetic_mnist, fit_tiny):
    curves = LearningCurves(panels=PANELS, redraw_seconds=3600)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=5, limit_train_batches=2, callbacks=[curves, MeasureAfterwards(every=2)])
    assert curves.history["quality/fid"] == [(2, fid(2)), (4, fid(4)), (5, fid(5))]  # not the value of epoch 2 again at 3


def test_a_measurement_logged_before_them_in_the_epoch_counts_at_that_epoch(synthetic_mnist, fit_tiny):
    curves = LearningCurves(panels=PANELS, redraw_seconds=3600)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=3, limit_train_batches=2, callbacks=[MeasureAfterwards(every=2), curves])
    assert curves.history["quality/fid"] == [(2, fid(2)), (3, fid(3))]


def test_resumed_curves_continue_without_repeating_an_epoch(synthetic_mnist, fit_tiny, tmp_path):
    first = LearningCurves(panels=PANELS, redraw_seconds=3600)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    fit_tiny(
        TINY,
        mnist(synthetic_mnist),
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[first, MeasureAfterwards(), checkpoint],
        enable_checkpointing=True,
    )
    resumed = LearningCurves(panels=PANELS, redraw_seconds=3600)
    fit_tiny(
        TINY,
        mnist(synthetic_mnist),
        max_epochs=3,
        limit_train_batches=2,
        callbacks=[resumed, MeasureAfterwards()],
        enable_checkpointing=True,
        ckpt_path=tmp_path / "checkpoints" / "last.ckpt",
    )
    assert resumed.history["quality/fid"] == [(1, fid(1)), (2, fid(2)), (3, fid(3))]  # epoch 2's: logged after them
    assert [epoch for epoch, _ in resumed.history["train/g_loss"]] == [1, 2, 3]


def test_every_curve_is_a_line_with_markers(tmp_path, monkeypatch):
    figures = []
    real_new_figure = callbacks.plots.new_figure
    monkeypatch.setattr(callbacks.plots, "new_figure", lambda *size: figures.append(real_new_figure(*size)) or figures[-1])
    curves = LearningCurves(panels=PANELS)
    curves.history = {"train/d_loss": [(1, 0.7)], "train/g_loss": [(1, 0.9), (2, 0.8)], "quality/fid": [(1, 90.0)]}
    curves.draw(str(tmp_path / "curves.png"))
    lines = [line for axes in figures[0].axes for line in axes.get_lines()]
    assert len(lines) == 3 and all(line.get_marker() == "o" and line.get_linestyle() == "-" for line in lines)


def test_a_copy_of_a_recorded_value_on_another_device_is_not_a_new_value():
    class OnAccelerator(float):
        device = torch.device("cuda", 0)

    curves = LearningCurves(panels=PANELS)
    curves.recorded["train/d_loss"] = OnAccelerator(0.5)
    assert not curves.is_new("train/d_loss", torch.tensor(0.5))  # the trainer's teardown moved it to the CPU
    assert curves.is_new("train/d_loss", torch.tensor(0.25))
    curves.recorded["quality/fid"] = value = torch.tensor(9.0)
    assert not curves.is_new("quality/fid", value) and curves.is_new("quality/fid", torch.tensor(9.0))


def test_panels_of_other_callbacks_metrics_pass_the_check_of_the_modules_own(tmp_path):
    trainer = L.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    LearningCurves(panels={"FID": ["quality/fid"], "modes": ["eval/modes"], **PANELS}).setup(trainer, TINY(), "fit")
    with pytest.raises(ConfigError, match=r"panels name \['train/no_such'\], which GAN does not log"):
        LearningCurves(panels={"FID": ["quality/fid"], "loss": ["train/no_such"]}).setup(trainer, TINY(), "fit")
