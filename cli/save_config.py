"""The run's ``config.yaml``, written when training starts, and given to the W&B run."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger


class SaveConfigWhenTrainingStarts(SaveConfigCallback):
    """The resolved ``config.yaml`` of a fit is written when training starts, not at setup: a run
    refused or stopped before (a bad resume, missing data, Ctrl+C) leaves its folder's earlier
    ``config.yaml`` as it was, or no folder at all.

    A W&B run gets the same file among its files and its content as its config (under ``config``,
    beside the model's hyperparameters that Lightning logs): the dashboard can then filter and group
    runs by any setting, the trainer's and data's included, and an offline run carries it to ``wandb sync``.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.config_path = Path(trainer.log_dir) / self.config_filename  # on every rank: a collective under DDP
        super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Rank zero, after ``config.yaml`` is written."""
        path = getattr(self, "config_path", None)
        if path is None or not path.is_file():
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"config": yaml.safe_load(path.read_text())}, allow_val_change=True)
                shutil.copyfile(path, Path(logger.experiment.dir) / path.name)  # ``wandb sync`` uploads the files folder
