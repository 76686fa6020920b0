"""The check of the callbacks that read an image datamodule's splits as tensors: made in ``setup``, so
that a run that cannot give them the images fails before any training, not when training ends."""

from __future__ import annotations

import lightning as L

from core.errors import ConfigError


def require_image_datamodule(trainer: L.Trainer, callback: L.Callback, reads_test_split: bool = True) -> None:
    """Fail in ``setup``, before any training, when the images the callback needs cannot be had."""
    name = type(callback).__name__
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "split_tensors"):
        raise ConfigError(
            f"{name} needs an image datamodule (one with split_tensors, e.g. datamodules.MNISTDataModule) as data: "
            "set one, or remove the callback."
        )
    if reads_test_split and not datamodule.hparams.get("in_memory", True):
        raise ConfigError(
            f"{name} reads the test split as tensors, which needs data.in_memory: true; set it, or remove the callback."
        )
