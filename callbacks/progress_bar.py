"""The progress bar of a genlab run: Lightning's tqdm bar, saying what a reader of the run needs."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from callbacks.run_outputs import run_directory
from lightning_modules.components.step_logging import progress_bar_values, writes_step_logs


class GenlabProgressBar(TQDMProgressBar):
    """Lightning's bar with genlab's labels: ``Epoch 3/8`` (1-based, as the grids' names), the run's
    folder (``version_0``, where Lightning shows the first logger's version: a W&B id's tail), the
    optimizer step (``max_steps`` counts those: an adversarial batch takes k + 1 of them) and the
    family's losses as the model hands them over
    (:func:`~lightning_modules.components.step_logging.show_in_progress_bar`). Those are read off the
    device on the batches whose step values the loggers write, which wait for the device anyway, and
    shown until the next such batch: the bar makes no other batch wait.

    Lightning calls no ``on_train_epoch_start`` when a run resumes mid-epoch, so its bar would count
    from the resumed batch with no epoch and no total; this one sets them when training starts too.
    Where a training step is a group of minibatches (``data.minibatches_per_step``), the bar's unit
    says so.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.run_version = run_directory(trainer).name  # on every rank: a collective under DDP
        group = getattr(trainer.datamodule, "hparams", {}).get("minibatches_per_step", 1)
        self.unit = f" (in groups of {group} minibatches)" if group > 1 else ""
        self.losses: dict[str, float] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.start_epoch(trainer, done=trainer.fit_loop.epoch_loop.batch_progress.current.completed)

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        self.start_epoch(trainer, done=0)

    def start_epoch(self, trainer: L.Trainer, done: int) -> None:
        bar = self.train_progress_bar
        bar.reset(total=self.total_train_batches if self.total_train_batches != float("inf") else None)
        bar.initial = 0
        bar.n = done
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        bar.set_description(f"Epoch {trainer.current_epoch + 1}{epochs}{self.unit}")
        bar.refresh()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if writes_step_logs(trainer):  # a loss this step did not make (a WGAN critic-only step: no g_loss) keeps its last value
            self.losses |= {name: value.item() for name, value in progress_bar_values(pl_module).items()}
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"run": self.run_version, "step": trainer.global_step} | self.losses
