"""Export a trained classifier as one small, self-describing file (the domain classifiers of the metrics)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from callbacks.images import write_atomically
from lightning_modules.errors import ConfigError


class ExportClassifier(L.Callback):
    """When training ends, save the network and how to feed it to ``path`` (one small file).

    The file holds the LeNet's arguments and weights, the class names, and the normalisation its
    inputs need (the datamodule's ``mean_std`` statistics); :func:`lightning_modules.classifier.load_classifier` rebuilds it.
    Written atomically by rank 0, from the weights of the last epoch; not under ``fast_dev_run``.

    Args:
        path: Output file; default ``lightning_modules/pretrained/lenet_<dataset_name>.pt`` (relative
            to the working directory), where :class:`callbacks.SampleQuality` looks for it.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.destination = Path(self.path or f"lightning_modules/pretrained/lenet_{trainer.datamodule.dataset_name}.pt")
        normalization = getattr(trainer.datamodule, "normalization", None)
        if normalization != "mean_std":
            raise ConfigError(f"ExportClassifier stores the mean/std input statistics: set data.normalization='mean_std' (got {normalization!r}).")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:  # a smoke test must not replace real weights
            return
        datamodule = trainer.datamodule
        hp = pl_module.hparams
        exported = {
            "network": {k: hp[k] for k in ("sample_shape", "num_classes", "channels", "feature_dim", "dropout")},
            "state_dict": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
            "class_names": list(datamodule.class_names),
            "mean": list(datamodule.mean),
            "std": list(datamodule.std),
            "trained_epochs": trainer.current_epoch,
        }
        write_atomically(self.destination, lambda tmp: torch.save(exported, tmp))
