"""Guards every run gets from ``train.py``: a signal stops it at a batch boundary with a resumable
checkpoint, and a run that would train nothing is an error instead of a quiet success."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.run_outputs import run_directory
from core.errors import ConfigError
from core.stopping import NoteSignals, handle_signals, raise_stopped, restore_signals, stop_training_loop
from datamodules.loaders import ResumableBatches


class SaveOnInterrupt(L.Callback):
    """SIGTERM or SIGINT (Ctrl+C): finish the batch under way, write ``checkpoints/last.ckpt`` in the
    run folder, and let ``train.py`` exit with 128 + the signal number and the resume command.

    While training, the signal handlers only take note, so no step stops half-way (a discriminator
    updated, its generator not). At every batch end the ranks agree whether any of them was
    signalled (one collective, at the same point on every rank; in a single process the note itself,
    a Python flag, so no batch waits for the device), and genlab's loader
    (:class:`~datamodules.loaders.ResumableBatches`) then raises Lightning's ``SIGTERMException`` where
    the next step would begin: after all of the last batch (its hooks, logging, an epoch's end
    work), before any of the next. Lightning's own SIGTERM handler, replaced while training,
    broadcasts from inside the handler, and a DDP rank blocked in a collective never runs it: the
    run hung. Further signals, until ``last.ckpt`` is written, only say that it is being written: a
    key pressed three times must not cut the save short and lose the run (Ctrl+\\ quits at once).
    After the training loop (the final measurements) a signal stops the run at once
    (:class:`core.stopping.Stopped`). The handlers are :mod:`core.stopping`'s.
    """

    AGAIN = (
        "genlab: {signal} again: finishing the batch and writing checkpoints/last.ckpt first (Ctrl+\\ quits at once, without it)."
    )

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.checkpoint: Path | None = None
        self.note = NoteSignals(again=self.AGAIN)
        self.previous: dict[int, Any] = {}
        self.started = self.trained = False  # whether the training loop began, and ran to its end
        self.checkpoint_folder: Path | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has registered its handlers by now; these replace them until the run ends.
        self.previous = handle_signals(self.note)
        self.started = True
        self.checkpoint_folder = (
            Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else run_directory(trainer) / "checkpoints"
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.note.received is not None, all=False):
            return
        self.received = self.note.received or signal.SIGTERM  # None here: the request came from another rank
        loader = trainer.train_dataloader
        if not isinstance(loader, ResumableBatches):
            stop_training_loop()  # a torch DataLoader (in_memory: false) cannot resume mid-epoch anyway
        loader.stop_before_next_step = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # train.py runs this callback first, so no final measurement has begun yet.
        self.trained = True
        handle_signals(raise_stopped)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.received = self.received or self.note.received or signal.SIGTERM
            self.checkpoint = self.checkpoint_folder / "last.ckpt"
            self.epoch, self.step = trainer.current_epoch, trainer.global_step
            # Written to a temporary file and renamed over last.ckpt (cli.checkpoint_io): where
            # ModelCheckpoint(save_last="link") made it a link to an epoch checkpoint, the link is
            # replaced and the epoch checkpoint kept. Signals meanwhile only take note (self.note).
            trainer.save_checkpoint(self.checkpoint, weights_only=False)  # the whole training state, to resume
        self.restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        restore_signals(self.previous)
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
