"""Supervised image classifier: the domain classifiers behind genlab's sample-quality metrics.

Per batch of m labelled images::

    logits = LeNet(x)                                 # components/lenet.py
    descend (1/m) sum cross_entropy(logits_i, y_i)    (Adam, optional decoupled weight decay)

``configs/classifier_mnist.yaml`` and ``classifier_fashion_mnist.yaml`` train the two domain
classifiers; their :class:`callbacks.ExportClassifier` callback writes the network, with what is needed to
feed it, to ``lightning_modules/pretrained/`` (results: ``docs/domain_classifiers.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.components.lenet import LeNet
from lightning_modules.errors import ConfigError


class Classifier(L.LightningModule):
    """LeNet trained with cross-entropy; logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/acc``.

    Args:
        sample_shape: (C, H, W); linked from ``data.sample_shape`` by the CLI.
        num_classes: Number of classes (10 for every genlab dataset).
        channels, feature_dim, dropout: The network, see :class:`LeNet`.
        lr: Adam learning rate.
        weight_decay: Decoupled weight decay (AdamW); 0 is plain Adam.
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        feature_dim: int = 128,
        dropout: float = 0.25,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if not lr > 0 or weight_decay < 0:
            raise ConfigError(f"model.lr must be > 0 and model.weight_decay >= 0, got {lr!r} and {weight_decay!r}.")
        self.save_hyperparameters()
        self.network = LeNet(sample_shape, num_classes, channels, feature_dim, dropout)
        # keyed "<split>_acc": a ModuleDict key may not shadow an nn.Module attribute such as `train`
        self.accuracy = torch.nn.ModuleDict({f"{split}_acc": MulticlassAccuracy(num_classes, average="micro") for split in ("train", "val", "test")})

    @property
    def logged_metric_names(self) -> set[str]:
        """The epoch metrics this module logs: what a learning-curve panel may name."""
        return {f"{split}/{name}" for split in ("train", "val", "test") for name in ("loss", "acc")}

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        images, labels = batch
        logits = self.network(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = self.accuracy[f"{split}_acc"]
        accuracy(logits, labels)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, batch_size=len(labels), sync_dist=not on_step)
        self.log(f"{split}/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"loss": self.step(batch, "train")}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        fused = self.device.type in ("cpu", "cuda")  # one kernel over all parameters, the same update
        return torch.optim.AdamW(self.network.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=fused)


def load_classifier(path: str | Path) -> tuple[LeNet, dict[str, Any]]:
    """The LeNet exported by :class:`callbacks.ExportClassifier`, in eval mode with frozen weights,
    and the file's metadata (class names, input normalisation)."""
    if not Path(path).is_file():
        raise ConfigError(f"Classifier file {path} not found: train and export one with `python train.py fit --config configs/classifier_<dataset>.yaml`.")
    exported = torch.load(path, map_location="cpu", weights_only=True)
    network = LeNet(**exported["network"])
    network.load_state_dict(exported["state_dict"])
    network.eval().requires_grad_(False)
    return network, {k: v for k, v in exported.items() if k != "state_dict"}
