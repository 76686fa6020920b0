"""What an autoencoder reconstructs and generates: reconstructions of test images as training goes
on, decoded samples of a VAE's prior, and interpolations between the codes of test images of
different classes. The model interface they rely on is in :mod:`callbacks.autoencoder_codes`; they
draw and write on global rank zero only, each grid titled with the experiment, the epoch and the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import make_grid

from callbacks.autoencoder_codes import decode_codes, encode_images
from callbacks.image_splits_check import require_image_datamodule
from callbacks.plots import experiment_name, grid_title, save_titled_grid
from callbacks.run_outputs import run_directory, send_image_to_loggers
from callbacks.sample_grid import EpochFigure
from core.errors import ConfigError


class Reconstructions(EpochFigure):
    """Save ``reconstructions/epoch_NNN.png`` at chosen epochs and send it to the loggers: a fixed
    set of test images, each grid row of originals followed by the row of their reconstructions
    ``decode(encode(x))``, so that grids of different epochs compare.

    Args:
        epochs: 1-based epochs after which to save a grid.
        last: Also save a grid when training ends (after the last epoch, or as ``step_NNNNNNN.png``
            wherever ``max_steps`` or a stop signal ended it).
        num_images: Test images shown.
        nrow: Images per grid row.
        seed: Seed of the choice of test images.
    """

    def __init__(
        self, epochs: Sequence[int] = (1, 10, 50), last: bool = True, num_images: int = 16, nrow: int = 8, seed: int = 0
    ) -> None:
        if any(epoch < 1 for epoch in epochs) or num_images < 1 or nrow < 1:
            raise ConfigError(
                "Reconstructions: epochs are 1-based epoch numbers and num_images, nrow positive; "
                f"got epochs={list(epochs)}, num_images={num_images}, nrow={nrow}."
            )
        super().__init__(epochs, last)
        self.num_images = num_images
        self.nrow = nrow
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        super().setup(trainer, pl_module, stage)
        self.directory = run_directory(trainer) / "reconstructions"
        num_test = len(trainer.datamodule.split_tensors("test")[1])
        self.indices = torch.randperm(num_test, generator=torch.Generator().manual_seed(self.seed))[: self.num_images]

    def grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """Rows of originals, each followed by their reconstructions; short last rows padded blank."""
        datamodule = trainer.datamodule
        images = datamodule.split_tensors("test")[0][self.indices]
        originals = images.float().cpu() / 255
        reconstructions = decode_codes(pl_module, datamodule, encode_images(pl_module, datamodule, images))
        rows = []
        for original_row, reconstruction_row in zip(originals.split(self.nrow), reconstructions.split(self.nrow)):
            blank = torch.ones(self.nrow - len(original_row), *original_row.shape[1:])
            rows += [original_row, blank, reconstruction_row, blank]
        return make_grid(torch.cat(rows), nrow=self.nrow, padding=2, pad_value=1.0)

    def save_figure(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, title: str) -> None:
        path = self.directory / f"{name}.png"
        rows = ["original", "reconstruction"] * math.ceil(len(self.indices) / self.nrow)
        save_titled_grid(self.grid(trainer, pl_module), title, path, rows)
        send_image_to_loggers(trainer, "reconstructions", path, caption=f"{name} (step {trainer.global_step})")


class PriorSamples(L.Callback):
    """When training ends, save ``samples/prior.png`` and send it to the loggers: decoded codes
    drawn from a VAE's prior (with a fixed seed), what the VAE generates.

    Args:
        num_samples: Images in the grid.
        nrow: Images per grid row.
        seed: Seed of the prior codes.
    """

    def __init__(self, num_samples: int = 64, nrow: int = 8, seed: int = 0) -> None:
        if num_samples < 1 or nrow < 1:
            raise ConfigError(f"PriorSamples.num_samples and nrow must be positive, got {num_samples} and {nrow}.")
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "sample_prior"):
            raise ConfigError(
                f"PriorSamples decodes codes drawn from a prior, and {type(pl_module).__name__} has none (no sample_prior): "
                "remove the callback or train a VAE (model.class_path: lightning_modules.VAE)."
            )
        require_image_datamodule(trainer, self, reads_test_split=False)
        self.directory = run_directory(trainer) / "samples"
        self.experiment = experiment_name(trainer)  # on every rank: a collective under DDP

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        codes = pl_module.sample_prior(self.num_samples, torch.Generator().manual_seed(self.seed))
        images = decode_codes(pl_module, trainer.datamodule, codes)
        path = self.directory / "prior.png"
        title = grid_title(self.experiment, trainer.current_epoch, trainer.global_step)
        save_titled_grid(make_grid(images, nrow=self.nrow, padding=2, pad_value=1.0), title, path)
        send_image_to_loggers(trainer, "prior_samples", path, caption=f"step {trainer.global_step}")


def pairs_of_different_classes(labels: Tensor, pairs: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of up to ``pairs`` disjoint random pairs whose two labels differ."""
    order = torch.randperm(len(labels), generator=rng)
    half = len(order) // 2
    first, second = order[:half], order[half : 2 * half]
    different = labels[first] != labels[second]
    return first[different][:pairs], second[different][:pairs]


class Interpolation(L.Callback):
    """When training ends, save ``interpolation.png``: per row, the decoded codes on the straight
    line between the codes of two test images of different classes, ``steps`` of them; the first
    and last columns are the two images' reconstructions. Shows whether the space between classes
    decodes to plausible images (a VAE's should) or to blur.

    Args:
        steps: Images per row, both ends included.
        pairs: Rows (pairs of test images, fixed by ``seed``).
        seed: Seed of the choice of pairs.
    """

    def __init__(self, steps: int = 10, pairs: int = 4, seed: int = 0) -> None:
        if steps < 2 or pairs < 1:
            raise ConfigError(f"Interpolation needs steps >= 2 and pairs >= 1, got steps={steps}, pairs={pairs}.")
        self.steps = steps
        self.pairs = pairs
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)
        self.experiment = experiment_name(trainer)  # on every rank: a collective under DDP

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        starts, ends = pairs_of_different_classes(labels.cpu(), self.pairs, torch.Generator().manual_seed(self.seed))
        start_codes, end_codes = (
            encode_images(pl_module, datamodule, images[starts]),
            encode_images(pl_module, datamodule, images[ends]),
        )
        weights = torch.linspace(0.0, 1.0, self.steps)[None, :, None]
        codes = start_codes[:, None] + weights * (end_codes - start_codes)[:, None]
        decoded = decode_codes(pl_module, datamodule, codes.flatten(0, 1))
        path = self.directory / "interpolation.png"
        title = grid_title(self.experiment, trainer.current_epoch, trainer.global_step)
        save_titled_grid(make_grid(decoded, nrow=self.steps, padding=2, pad_value=1.0), title, path)
        send_image_to_loggers(trainer, "interpolation", path, caption=f"step {trainer.global_step}")
