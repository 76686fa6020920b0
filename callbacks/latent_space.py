"""What an autoencoder's code has learnt about the classes: how well a k-nearest-neighbour vote in
code space separates them, and the decoded plane of a 2-D code. The model interface they rely on is
in :mod:`callbacks.autoencoder_codes`; they read the test split of an in-memory image datamodule
(``split_tensors``), and measure, draw and write on global rank zero only.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.utils import make_grid

from callbacks.autoencoder_codes import decode_codes, encode_images
from callbacks.image_splits_check import require_image_datamodule
from callbacks.periodic import PeriodicMeasurement
from callbacks.plots import draw_codes, draw_confusion, experiment_name, grid_title, save_titled_grid
from callbacks.run_outputs import log_scalars, run_directory, send_image_to_loggers, write_atomically
from core.errors import ConfigError
from lightning_modules.components.confusion import knn_confusion, most_confused_pairs


class LatentSpace(PeriodicMeasurement):
    """How well the code separates the classes: a k-nearest-neighbour classifier in code space,
    fitted on one half of the first ``num_points`` test codes and scored on the other half.

    Logs ``latent/knn_accuracy``, draws ``latent_confusion.png`` (the confusion matrix) and, for a
    2-D code, ``latent_space.png`` (the codes coloured by class); when training ends also writes
    ``latent_knn_accuracy``, ``latent_confusion`` (rows: true class, columns: predicted) and
    ``latent_confused_pairs`` (``[[class, class, count], ...]``, both directions counted, top 5) into
    ``final_metrics.json``, keeping the keys other callbacks wrote there.

    Args:
        num_points: Test images encoded (the first ones; at most the whole test split).
        neighbours: k of the k-NN vote.
        every_n_epochs: Also measure every that many epochs (0: only when training ends).
        seed: Seed of the split into fitted and scored halves.
    """

    def __init__(self, num_points: int = 10_000, neighbours: int = 10, every_n_epochs: int = 0, seed: int = 0) -> None:
        if num_points < 2 or neighbours < 1 or every_n_epochs < 0:
            raise ConfigError(
                "LatentSpace needs num_points >= 2, neighbours >= 1 and every_n_epochs >= 0; "
                f"got {num_points}, {neighbours}, {every_n_epochs}."
            )
        super().__init__(every_n_epochs)
        self.num_points = num_points
        self.neighbours = neighbours
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        super().setup(trainer, pl_module, stage)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        datamodule = trainer.datamodule
        images, labels = (tensor[: self.num_points] for tensor in datamodule.split_tensors("test"))
        codes, labels = encode_images(pl_module, datamodule, images), labels.cpu()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        fitted, scored = order[: len(order) // 2], order[len(order) // 2 :]
        class_names = list(datamodule.class_names)
        confusion = knn_confusion(codes[fitted], labels[fitted], codes[scored], labels[scored], self.neighbours, len(class_names))
        accuracy = confusion.diag().sum().item() / confusion.sum().item()
        log_scalars(trainer, {"latent/knn_accuracy": accuracy})
        title = f"test codes at step {trainer.global_step}: {self.neighbours}-NN accuracy {accuracy:.1%}"
        write_atomically(
            self.directory / "latent_confusion.png", lambda path: draw_confusion(path, confusion, class_names, title)
        )
        if codes.shape[1] == 2:
            write_atomically(
                self.directory / "latent_space.png", lambda path: draw_codes(path, codes, labels, class_names, title)
            )
        return {
            "latent_knn_accuracy": accuracy,
            "latent_confusion": confusion.tolist(),
            "latent_confused_pairs": most_confused_pairs(confusion, class_names),
        }

    def describe(self, trainer: L.Trainer) -> str:
        return f"the code's {self.neighbours}-NN class accuracy on {self.num_points:,} test images"

    def headline(self, metrics: dict[str, Any]) -> list[str]:
        if "latent_knn_accuracy" not in metrics:
            return []
        pairs = ", ".join(f"{a}/{b} ({count})" for a, b, count in metrics["latent_confused_pairs"][:3])
        return [f"{self.neighbours}-NN accuracy in the code {100 * metrics['latent_knn_accuracy']:.1f} %; most confused: {pairs}"]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.is_global_zero and self.last is not None:
            figure = "latent_space" if pl_module.code_size == 2 else "latent_confusion"
            send_image_to_loggers(trainer, figure, self.directory / f"{figure}.png", caption=f"step {trainer.global_step}")


class LatentManifold(L.Callback):
    """When training ends, save ``latent_manifold.png``: the decoded images of a ``grid_size`` x
    ``grid_size`` grid over a 2-D code plane, first code left to right, second bottom to top (as in
    ``latent_space.png``). A VAE's grid spans the 5%..95% quantiles of its N(0, I) prior, where its
    codes are meant to be; an autoencoder has no prior, so its grid spans the 1st..99th percentile of
    its test codes along each axis. A code of another size has no plane to draw: the callback then
    says so once and draws nothing, so that one callback list serves a family's 2-D and wider models.

    Args:
        grid_size: Images per row and column.
    """

    def __init__(self, grid_size: int = 20) -> None:
        if grid_size < 2:
            raise ConfigError(f"LatentManifold.grid_size must be >= 2, got {grid_size}.")
        self.grid_size = grid_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.draws = pl_module.code_size == 2
        if not self.draws:
            rank_zero_info(f"LatentManifold: the code has {pl_module.code_size} dimensions, not 2; no latent_manifold.png.")
            return
        require_image_datamodule(trainer, self, reads_test_split=not hasattr(pl_module, "sample_prior"))
        self.directory = run_directory(trainer)
        self.experiment = experiment_name(trainer)

    def axis_values(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """``(grid_size, 2)``: the values each code takes along its axis of the grid."""
        if hasattr(pl_module, "sample_prior"):
            quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, self.grid_size))
            return quantiles[:, None].expand(-1, 2)
        codes = encode_images(pl_module, trainer.datamodule, trainer.datamodule.split_tensors("test")[0])
        low, high = torch.quantile(codes, torch.tensor([0.01, 0.99]), dim=0)
        return torch.stack([torch.linspace(low[axis], high[axis], self.grid_size) for axis in range(2)], dim=1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.draws:
            return
        values = self.axis_values(trainer, pl_module)
        second, first = torch.meshgrid(
            values[:, 1].flip(0), values[:, 0], indexing="ij"
        )  # image rows: second code, top = highest
        images = decode_codes(pl_module, trainer.datamodule, torch.stack([first, second], dim=-1).reshape(-1, 2))
        path = self.directory / "latent_manifold.png"
        title = grid_title(self.experiment, trainer.current_epoch, trainer.global_step)
        save_titled_grid(make_grid(images, nrow=self.grid_size, padding=0), title, path)
        send_image_to_loggers(trainer, "latent_manifold", path, caption=f"step {trainer.global_step}")
