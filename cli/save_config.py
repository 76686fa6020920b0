"""The run's ``config.yaml``, written when training starts."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback


class SaveConfigWhenTrainingStarts(SaveConfigCallback):
    """The resolved ``config.yaml`` of a fit is written when training starts, not at setup: a run
    refused or stopped before (a bad resume, missing data, Ctrl+C) leaves its folder's earlier
    ``config.yaml`` as it was, or no folder at all."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().setup(trainer, pl_module, "fit")
