"""Guards every run gets from ``train.py``: a signal stops it at a batch boundary with a resumable
checkpoint, and a run that would train nothing is an error instead of a quiet success."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.images import run_directory
from core.errors import ConfigError
from datamodules.base import ResumableBatches


class Stopped(BaseException):
    """SIGINT or SIGTERM outside the training loop (loading, or the final measurements), where no batch
    end is left to stop at: raised by the handler, at once, and answered by ``train.py``. A
    ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it."""

    def __init__(self, received: signal.Signals) -> None:
        super().__init__(received.name)
        self.signal = received


def raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum))


class SaveOnInterrupt(L.Callback):
    """SIGTERM or SIGINT (Ctrl+C): finish the batch under way, write ``checkpoints/last.ckpt`` in the
    run folder, and let ``train.py`` exit with 128 + the signal number and the resume command.

    While training, the signal handlers only take note, so no step stops half-way (a discriminator
    updated, its generator not). At every batch end the ranks agree whether any of them was
    signalled (one collective, at the same point on every rank), and genlab's loader
    (:class:`~datamodules.base.ResumableBatches`) then raises Lightning's ``SIGTERMException`` where
    the next step would begin: after all of the last batch (its hooks, logging, an epoch's end
    work), before any of the next. Lightning's own SIGTERM handler, replaced while training,
    broadcasts from inside the handler, and a DDP rank blocked in a collective never runs it: the
    run hung. Further signals, until ``last.ckpt`` is written, only say that it is being written: a
    key pressed three times must not cut the save short and lose the run (Ctrl+\\ quits at once).
    After the training loop (the final measurements) a signal stops the run at once (:class:`Stopped`).
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.checkpoint: Path | None = None
        self.previous: dict[int, Any] = {}
        self.started = self.trained = False  # whether the training loop began, and ran to its end
        self.checkpoint_folder: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has registered its handlers by now; these replace them until the run ends.
        self.previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in self.previous:
            signal.signal(signum, self._on_signal)
        self.started = True
        self.checkpoint_folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else run_directory(trainer) / "checkpoints"

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            print(f"genlab: {signal.Signals(signum).name} again: finishing the batch and writing checkpoints/last.ckpt first (Ctrl+\\ quits at once, without it).", file=sys.stderr)
        self.received = self.received or signal.Signals(signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        self.received = self.received or signal.SIGTERM  # the request came from another rank
        loader = trainer.train_dataloader
        if not isinstance(loader, ResumableBatches):
            raise SIGTERMException  # a torch DataLoader (in_memory: false) cannot resume mid-epoch anyway
        loader.stop_before_next_step = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # train.py runs this callback first, so no final measurement has begun yet.
        self.trained = True
        for signum in self.previous:
            signal.signal(signum, raise_stopped)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.received = self.received or signal.SIGTERM
            self.checkpoint = self.checkpoint_folder / "last.ckpt"
            self.epoch, self.step = trainer.current_epoch, trainer.global_step
            # Written to a temporary file and renamed over last.ckpt (cli.checkpoint_io): where
            # ModelCheckpoint(save_last="link") made it a link to an epoch checkpoint, the link is
            # replaced and the epoch checkpoint kept. Signals meanwhile only take note (_on_signal).
            trainer.save_checkpoint(self.checkpoint)
        self.restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        for signum, handler in self.previous.items():
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

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.trained_batches += 1

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained_batches == 0 and not trainer.interrupted:
            raise ConfigError(
                f"the run trained no batch (epoch {trainer.current_epoch}, max_epochs {trainer.max_epochs}, "
                f"{trainer.num_training_batches} training batches per epoch): a resumed run needs a larger "
                "--trainer.max_epochs; otherwise check data.batch_size and trainer.limit_train_batches."
            )
