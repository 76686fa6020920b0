"""What a trained classifier gets wrong: its confusion matrix on the whole test split."""

from __future__ import annotations

import lightning as L
import torch

from callbacks.image_splits_check import require_image_datamodule
from callbacks.plots import draw_confusion
from callbacks.run_outputs import eval_mode, run_directory, send_image_to_loggers, write_atomically, write_final_metrics
from lightning_modules.components.confusion import most_confused_pairs


class TestConfusion(L.Callback):
    """When training ends, classify the whole test split (in-memory image datamodules) and write
    ``test_confusion.png`` (to every logger too) and, in ``final_metrics.json``,
    ``test_class_accuracy`` (per class name), ``test_confusion`` (true x predicted counts) and
    ``test_confused_pairs`` (the class pairs most often mistaken for each other). Rank zero only.

    Args:
        chunk_size: Test images classified at a time.
    """

    __test__ = False  # a callback, not a pytest test class

    def __init__(self, chunk_size: int = 1000) -> None:
        self.chunk_size = chunk_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        with eval_mode(pl_module):
            predicted = torch.cat(
                [
                    pl_module(datamodule.normalize(chunk.to(pl_module.device))).argmax(1).cpu()
                    for chunk in images.split(self.chunk_size)
                ]
            )
        class_names = list(datamodule.class_names)
        num_classes = len(class_names)
        confusion = torch.bincount(labels.cpu() * num_classes + predicted, minlength=num_classes**2).view(
            num_classes, num_classes
        )
        accuracy = confusion.diag().sum().item() / len(labels)
        title = f"test split after {trainer.current_epoch} epochs: accuracy {accuracy:.1%}"
        path = self.directory / "test_confusion.png"
        write_atomically(path, lambda tmp: draw_confusion(tmp, confusion, class_names, title))
        send_image_to_loggers(trainer, "test_confusion", path, caption=title)
        per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
        write_final_metrics(
            self.directory,
            {
                "test_class_accuracy": dict(zip(class_names, per_class)),
                "test_confusion": confusion.tolist(),
                "test_confused_pairs": most_confused_pairs(confusion, class_names),
            },
        )
