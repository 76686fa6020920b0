"""Grids of generated samples from a fixed batch of noise, so that grids of different epochs compare."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import Tensor
from torchvision.utils import make_grid

from callbacks.plots import experiment_name, grid_title, save_titled_grid
from callbacks.run_outputs import eval_mode, run_directory, send_image_to_loggers
from core.errors import ConfigError


class EpochFigure(L.Callback):
    """A figure saved after chosen 1-based ``epochs`` and, with ``last``, when training ends
    (``epoch_NNN`` after the last epoch, ``step_NNNNNNN`` where ``max_steps`` or a stop signal ended
    it), on global rank zero, at most once per step. Subclasses write it in :meth:`save_figure`, titled
    with the experiment, the 1-based epoch and the global step (:func:`callbacks.plots.grid_title`);
    a subclass's ``setup`` calls this one's."""

    def __init__(self, epochs: Sequence[int], last: bool) -> None:
        self.epochs = set(epochs)
        self.last = last
        self.saved_at_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.experiment = experiment_name(trainer)  # on every rank: a collective under DDP

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, epoch: int) -> None:
        if not trainer.is_global_zero or self.saved_at_step == trainer.global_step:
            return
        self.save_figure(trainer, pl_module, name, grid_title(self.experiment, epoch, trainer.global_step))
        self.saved_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch in self.epochs or (self.last and epoch == trainer.max_epochs):
            self.save(trainer, pl_module, f"epoch_{epoch:03d}", epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last:  # the epochs run, the last maybe cut short: the 1-based number of the last one
            self.save(trainer, pl_module, f"step_{trainer.global_step:07d}", trainer.current_epoch)


class SampleGrid(EpochFigure):
    """Save ``samples/epoch_NNN.png`` at chosen epochs and send it to the loggers, titled with the
    experiment, epoch and step.

    The noise (and, for conditional models, the labels) comes from the module's ``fixed_inputs``
    with a fixed seed, so every grid shows the same latent points as training moves them. When
    every row of a conditional grid asks for one class (e.g. 100 samples in rows of 10 from
    :class:`lightning_modules.CGAN`), the rows are labelled with the datamodule's class names.

    Args:
        epochs: 1-based epochs after which to save a grid.
        last: Also save a grid when training ends (after the last epoch, or wherever
            ``max_steps`` or a stop signal ended it).
        num_samples: Images per grid.
        nrow: Images per grid row.
        seed: Seed of the fixed noise.
    """

    def __init__(
        self, epochs: Sequence[int] = (1, 50, 100), last: bool = True, num_samples: int = 64, nrow: int = 8, seed: int = 0
    ):
        if any(epoch < 1 for epoch in epochs) or num_samples < 1 or nrow < 1:
            raise ConfigError(
                "SampleGrid: epochs are 1-based epoch numbers and num_samples, nrow positive; "
                f"got epochs={list(epochs)}, num_samples={num_samples}, nrow={nrow}."
            )
        super().__init__(epochs, last)
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.directory = run_directory(trainer) / "samples"
        self.inputs = pl_module.fixed_inputs(self.num_samples, torch.Generator().manual_seed(self.seed))

    @torch.no_grad()
    def save_figure(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str, title: str) -> None:
        z, labels = (None if t is None else t.to(pl_module.device) for t in self.inputs)
        with eval_mode(pl_module):
            images = pl_module.generate(z, labels)
        denormalize = getattr(trainer.datamodule, "denormalize", None)
        images = denormalize(images) if denormalize else images
        path = self.directory / f"{name}.png"
        grid = make_grid(images.float().cpu(), nrow=self.nrow, padding=2, pad_value=1.0)
        save_titled_grid(grid, title, path, self.row_class_names(labels, getattr(trainer.datamodule, "class_names", None)))
        send_image_to_loggers(trainer, "samples", path, caption=f"{name} (step {trainer.global_step})")

    def row_class_names(self, labels: Tensor | None, class_names: Sequence[str] | None) -> list[str] | None:
        """The class name of each grid row, if every row holds one class; else ``None``."""
        if labels is None or class_names is None or len(labels) % self.nrow:
            return None
        rows = labels.cpu().view(-1, self.nrow)
        if not (rows == rows[:, :1]).all():
            return None
        return [class_names[label] for label in rows[:, 0].tolist()]
