"""Supervised image classifier: the domain classifiers behind genlab's sample-quality metrics and
the CIFAR-10 LeNet study.

Per batch of m labelled images::

    logits = network(x)                               # components/lenet.py, chosen by config
    descend (1/m) sum cross_entropy(logits_i, y_i)    # the optimizer chosen by config

``configs/classifier_mnist.yaml`` and ``classifier_fashion_mnist.yaml`` train the two domain
classifiers (AdamW); their :class:`callbacks.ExportClassifier` callback writes the network, with what
is needed to feed it, into the run folder, and ``python -m cli.export promote`` stores it in
``pretrained/`` once it has earned it (results: ``docs/domain_classifiers.md``).
``configs/cifar10_lenet*.yaml`` train the PyTorch tutorial's network with SGD (docs/cifar10_lenet.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.batches import is_minibatch_group
from core.errors import ConfigError
from lightning_modules.components.compilation import CompiledSteps, CompileMode
from lightning_modules.components.lenet import LeNet
from lightning_modules.components.step_logging import show_in_progress_bar
from lightning_modules.components.stored_network import load_stored_network

#: ``network(sample_shape, num_classes)``: a config names the class and its other arguments.
NetworkFactory = Callable[[Sequence[int], int], nn.Module]
#: ``optimizer(parameters)``: a config names the ``torch.optim`` class and its arguments.
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class Classifier(L.LightningModule):
    """A network trained with cross-entropy, one optimizer step per minibatch::

        for each minibatch (x, y):                       # one, or a list of them per training step
            loss = cross_entropy(network(x), y)          # mean over the minibatch
            zero the gradients; backpropagate; optimizer step

    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc`` (means over images),
    ``test/loss`` and ``test/acc`` when tested, and ``train/running_loss``: the mean training loss
    of each ``running_loss_batches`` consecutive minibatches of an epoch (the PyTorch tutorial prints
    it every 2,000). Manual optimization so that a training step may take a list of minibatches
    (``data.minibatches_per_step``): at batch size 4, Lightning's per-step work would otherwise cost
    more than the arithmetic.

    Args:
        sample_shape: (C, H, W); linked from ``data.sample_shape`` by the CLI.
        num_classes: Number of classes (10 for every genlab dataset).
        network: The network, given the input shape and class count (default :class:`LeNet`'s
            domain-classifier defaults); in a config, ``class_path`` and ``init_args``.
        optimizer: The optimizer over the network's parameters (default AdamW, lr 1e-3); in a
            config, ``class_path: torch.optim.SGD`` with its ``init_args``.
        running_loss_batches: Minibatches per ``train/running_loss`` point.
        compile: ``none`` (eager), or a ``torch.compile`` mode for the training loss
            (:mod:`lightning_modules.components.compilation`).
    """

    #: ``training_step`` takes a list of minibatches too (``data.minibatches_per_step``).
    accepts_minibatch_groups = True

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        network: NetworkFactory = LeNet,
        optimizer: OptimizerFactory = torch.optim.AdamW,
        running_loss_batches: int = 2000,
        compile: CompileMode = "none",
    ) -> None:
        super().__init__()
        if running_loss_batches < 1:
            raise ConfigError(f"model.running_loss_batches must be >= 1, got {running_loss_batches!r}.")
        self.save_hyperparameters()  # from a config: the network's and optimizer's class_path and init_args
        self.automatic_optimization = False
        self.network = network(tuple(sample_shape), num_classes)
        self.make_optimizer = optimizer
        self.compiled = CompiledSteps(compile)
        self.running_sum: Tensor | None = None
        self.minibatches_this_epoch = 0

    @property
    def logged_metric_names(self) -> set[str]:
        """The metrics this module logs: what a learning-curve panel may name."""
        return {f"{split}/{name}" for split in ("train", "val", "test") for name in ("loss", "acc")} | {"train/running_loss"}

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def loss_and_correct(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy of the minibatch and its number of correct predictions."""
        logits = self.network(images)
        return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).sum()

    def training_step(self, batch: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]], batch_idx: int) -> dict[str, Tensor]:
        minibatches = batch if is_minibatch_group(batch) else [batch]
        optimizer = self.optimizers()
        loss_sum, correct, images_seen, running_loss = 0.0, 0, 0, None
        for images, labels in minibatches:
            loss, right = self.compiled(self.loss_and_correct)(images, labels)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            loss = loss.detach()
            loss_sum, correct, images_seen = loss_sum + loss * len(labels), correct + right, images_seen + len(labels)
            self.running_sum = loss if self.running_sum is None else self.running_sum + loss
            self.minibatches_this_epoch += 1
            if self.minibatches_this_epoch % self.hparams.running_loss_batches == 0:
                running_loss, self.running_sum = self.running_sum / self.hparams.running_loss_batches, None
        # epoch means weighted by images: exact whatever the grouping
        self.log("train/loss", loss_sum / images_seen, on_step=False, on_epoch=True, batch_size=images_seen)
        self.log("train/acc", correct / images_seen, on_step=False, on_epoch=True, batch_size=images_seen)
        if running_loss is not None:
            self.log("train/running_loss", running_loss, on_step=True, on_epoch=False)
        show_in_progress_bar(self, {"loss": loss})
        return {"loss": loss}

    def on_train_epoch_start(self) -> None:
        self.running_sum, self.minibatches_this_epoch = None, 0  # a point never mixes two epochs (the tutorial restarts it too)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        loss, correct = self.loss_and_correct(images, labels)
        self.log_dict({"val/loss": loss, "val/acc": correct / len(labels)}, batch_size=len(labels), sync_dist=True)

    def test_metrics(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``loss`` and ``acc`` of one test batch: what ``test_step`` logs and what
        :class:`callbacks.TestSplitMetrics` measures during fit (the accuracy at chosen epochs)."""
        loss, correct = self.loss_and_correct(*batch)
        return {"loss": loss, "acc": correct / len(batch[1])}

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log_dict(
            {f"test/{name}": value for name, value in self.test_metrics(batch, batch_idx).items()},
            batch_size=len(batch[1]),
            sync_dist=True,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.network.parameters())


def load_classifier(path: str | Path) -> tuple[LeNet, dict[str, Any]]:
    """The LeNet exported by :class:`callbacks.ExportClassifier`, in eval mode with frozen weights,
    and the file's metadata (class names, input normalisation)."""
    return load_stored_network(
        path,
        LeNet,
        "classifier file",
        "train and export one with `python train.py fit --config configs/classifier_<dataset>.yaml`, "
        "or restore the stored one with `git checkout -- pretrained/`",
    )
