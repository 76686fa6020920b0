"""Guards every run gets from ``train.py``: a signal stops it at a batch boundary with a resumable
checkpoint, and a run that would train nothing is an error instead of a quiet success."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.images import run_directory
from lightning_modules.errors import ConfigError


class SaveOnInterrupt(L.Callback):
    """SIGTERM or SIGINT (Ctrl+C): finish the current batch, write ``checkpoints/last.ckpt`` in the
    run folder, and let ``train.py`` exit with 128 + the signal number and the resume command.

    Lightning already stops at the next batch boundary on SIGTERM (``SIGTERMException``); SIGINT
    is turned into the same request, so that Ctrl+C never stops a step half-way (a discriminator
    updated, its generator not). A second Ctrl+C stops at once, without a checkpoint.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.checkpoint: Path | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registers its own SIGTERM handler after this hook and keeps calling this one.
        self.previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C stops at once
        self.received = signal.SIGINT
        os.kill(os.getpid(), signal.SIGTERM)  # the stop request Lightning's loops honour

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.received = self.received or signal.SIGTERM

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.restore_handlers()
        if not isinstance(exception, SIGTERMException):
            return
        self.received = self.received or signal.SIGTERM
        folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else run_directory(trainer) / "checkpoints"
        self.checkpoint = folder / "last.ckpt"
        self.epoch, self.step = trainer.current_epoch, trainer.global_step
        if trainer.is_global_zero and self.checkpoint.is_symlink():
            self.checkpoint.unlink()  # ModelCheckpoint(save_last="link") points it at an epoch checkpoint: keep that one
        trainer.save_checkpoint(self.checkpoint)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in getattr(self, "previous", {}).items():
            signal.signal(signum, handler)
        self.previous = {}


class RequireTraining(L.Callback):
    """Refuse a fit that cannot take one optimizer step (``max_epochs 0``, ``limit_train_batches 0``)
    before anything is written, and fail one that took none (e.g. resumed past its ``max_epochs``)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for key in ("max_epochs", "max_steps", "limit_train_batches"):
            if getattr(trainer, key) == 0:
                raise ConfigError(f"trainer.{key}=0 trains nothing: give it a positive value (or leave it out).")
        self.trained_batches = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.trained_batches += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained_batches == 0 and not trainer.interrupted:
            raise ConfigError(
                f"the run trained no batch (epoch {trainer.current_epoch}, max_epochs {trainer.max_epochs}, "
                f"{trainer.num_training_batches} training batches per epoch): a resumed run needs a larger "
                "--trainer.max_epochs; otherwise check data.batch_size and trainer.limit_train_batches."
            )
