"""The model's own test metrics on the whole test split during training: the curve of test
reconstruction error, NLL or accuracy against epoch, without a separate ``train.py test``."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from callbacks.image_splits_check import require_image_datamodule
from callbacks.periodic import PeriodicMeasurement
from callbacks.run_outputs import eval_mode, log_scalars
from core.errors import ConfigError
from core.seeding import seeded

#: What the summary says of a test metric's value; a model's ``test_metric_units`` say more of its own.
UNITS = {"nll": " nats per image", "elbo": " nats per image", "acc": " (fraction right)"}


class TestSplitMetrics(PeriodicMeasurement):
    """The model's test metrics (``pl_module.test_metrics``, what ``train.py test`` reports) on the
    whole test split, every ``every_n_epochs`` epochs and when training ends: the curve of test
    reconstruction error, NLL or accuracy against epoch, and in ``final_metrics.json``
    ``test_<name>_epoch_<E>`` of each measured epoch and ``test_<name>`` at the end, from ``fit``
    alone. Batches and their indices are the test loader's, so the numbers are those of
    ``train.py test`` in one process, but for the noise of a sampled bound, drawn from ``seed``.

    The model provides ``test_metrics((images, labels), batch_idx) -> dict[str, Tensor]``: what its
    ``test_step`` logs, per batch (the autoencoders and the classifier have it). Rank zero only. Under
    ``fast_dev_run`` only its first batches, as many as Lightning's own loops run: a smoke test checks the path,
    not the number (the IWAE protocol's k = 5,000 bound over the whole split takes minutes on a CPU).

    Args:
        every_n_epochs: Measurement period (0: only when training ends).
        epochs: 1-based epochs measured as well, e.g. the ends of the IWAE schedule's stages, [1, 4, 13, 40, 121].
        seed: Seed of the measurement's own noise (a VAE's samples of its bounds): the same numbers whatever
            trained before, and training's random stream untouched.
    """

    __test__ = False  # a callback, not a pytest test class

    def __init__(self, every_n_epochs: int = 10, seed: int = 0, epochs: Sequence[int] = ()) -> None:
        if every_n_epochs < 0:
            raise ConfigError(f"TestSplitMetrics.every_n_epochs must be >= 0 (0: at the end only), got {every_n_epochs}.")
        if any(epoch < 1 for epoch in epochs):
            raise ConfigError(f"TestSplitMetrics.epochs are 1-based epochs (>= 1), got {list(epochs)}.")
        super().__init__(every_n_epochs, epochs)
        self.seed = seed
        self.by_epoch: dict[str, float] = {}  # written when training ends: final_metrics.json marks a finished run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        super().setup(trainer, pl_module, stage)
        self.units = UNITS | getattr(pl_module, "test_metric_units", {})

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        if trainer.fast_dev_run:
            kept = self.smoke_test_size(trainer)
            images, labels = images[:kept], labels[:kept]
        sums: dict[str, float] = {}
        with eval_mode(pl_module), seeded(self.seed, pl_module.device):
            for batch_idx, (chunk, chunk_labels) in enumerate(
                zip(images.split(datamodule.batch_size), labels.split(datamodule.batch_size))
            ):
                batch = (datamodule.normalize(chunk.to(pl_module.device)), chunk_labels.to(pl_module.device))
                for name, value in pl_module.test_metrics(batch, batch_idx).items():
                    sums[name] = sums.get(name, 0.0) + value.item() * len(chunk)
        metrics = {name: total / len(images) for name, total in sums.items()}
        log_scalars(trainer, {f"test/{name}": value for name, value in metrics.items()})
        return metrics

    def measured_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.by_epoch |= {f"test_{name}_epoch_{epoch}": value for name, value in metrics.items()}

    def final_metrics(self, trainer: L.Trainer) -> dict[str, float]:
        return self.by_epoch | {f"test_{name}": value for name, value in self.last.items()}

    @staticmethod
    def smoke_test_size(trainer: L.Trainer) -> int:
        return trainer.datamodule.batch_size * int(trainer.fast_dev_run)

    def describe(self, trainer: L.Trainer) -> str:
        if trainer.fast_dev_run:
            return f"the test metrics on the first {self.smoke_test_size(trainer):,} test images (fast_dev_run)"
        return f"the test metrics on the {trainer.datamodule.split_size('test'):,} test images"

    def headline(self, metrics: dict[str, float]) -> list[str]:
        if not self.last:
            return []
        shown = ", ".join(f"{name} {value:.4g}{self.units.get(name, '')}" for name, value in self.last.items())
        return [f"on the test split: {shown}"]

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"by_epoch": dict(self.by_epoch)}  # a resumed run still reports the epochs before it

    def load_state_dict(self, state_dict: dict[str, dict[str, float]]) -> None:
        self.by_epoch = dict(state_dict.get("by_epoch", {}))
