"""Measuring a model during training: every ``every_n_epochs`` epochs and once more when training ends,
the last measurement going into ``final_metrics.json``. One mechanism, so that every measuring
callback skips the same repeats and finishes a run the same way."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import lightning as L

from callbacks.console import duration, say
from callbacks.run_outputs import run_directory, write_final_metrics


class PeriodicMeasurement(L.Callback, ABC):
    """Base of the callbacks that measure every ``every_n_epochs`` epochs (0: only when training ends), after
    each 1-based epoch of ``epochs`` (a schedule's stage ends) and when training ends, and then merge their last
    measurement into ``final_metrics.json``,
    keeping the keys other callbacks wrote there.

    The measurement after training is announced (what, and how long the one before took) and timed
    on the console: it can take a minute on a CPU, after the progress bar has finished.

    A measurement at the step already measured is skipped: training that ends right after a
    measuring epoch measures once. A subclass overrides :meth:`measure`, which logs what it
    measured and returns what goes into ``final_metrics.json``; it may override
    :meth:`final_metrics` to add to that, :meth:`measured_epoch` to keep each epoch's, :meth:`describe`
    to say what it measures and :meth:`headline` to put its main numbers in the run's closing summary.

    The measurement runs on global rank zero only, unless the subclass sets
    :attr:`measured_on_every_rank` (its measurement is a collective: under DDP every rank measures its
    share); the file is written by rank zero.
    """

    #: Whether every rank takes part in a measurement (each measures its share), not rank zero alone.
    measured_on_every_rank = False

    def __init__(self, every_n_epochs: int, epochs: Sequence[int] = ()) -> None:
        self.every_n_epochs = every_n_epochs
        self.epochs = set(epochs)  # 1-based epochs measured besides the multiples of every_n_epochs
        self.last: dict[str, Any] | None = None
        self.measured_at_step: int | None = None
        self.seconds: float | None = None  # how long the last measurement took

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)  # on every rank: a collective under DDP

    @abstractmethod
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Measure the model now, log the scalars, and return what ``final_metrics.json`` records."""

    def measures_now(self, trainer: L.Trainer) -> bool:
        """Whether this process measures at this step: its rank takes part, and the step is not measured yet."""
        return (self.measured_on_every_rank or trainer.is_global_zero) and self.measured_at_step != trainer.global_step

    def take_measurement(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """:meth:`measure`, kept as :attr:`last`, unless :meth:`measures_now` says no; whether it measured."""
        if not self.measures_now(trainer):
            return False
        started = time.perf_counter()
        self.last = self.measure(trainer, pl_module)
        self.measured_at_step = trainer.global_step
        self.seconds = time.perf_counter() - started
        return True

    def describe(self, trainer: L.Trainer) -> str:
        """What is measured, for the console: e.g. ``sample quality of 10,000 generated images``."""
        return type(self).__name__

    def headline(self, metrics: dict[str, Any]) -> list[str]:
        """The main numbers of ``final_metrics.json`` (``metrics``: all of it) for the run's closing
        summary, each with what to compare it with; by default none."""
        return []

    def measured_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """What the measurement after 1-based ``epoch`` gave; by default nothing is kept of it but :attr:`last`."""

    def final_metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        """What goes into ``final_metrics.json`` when training ends: the last measurement."""
        return self.last

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        due = (self.every_n_epochs and epoch % self.every_n_epochs == 0) or epoch in self.epochs
        if due and self.take_measurement(trainer, pl_module):
            self.measured_epoch(epoch, self.last)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.measures_now(trainer):
            before = f" (the one before took {duration(self.seconds)})" if self.seconds is not None else ""
            say(trainer, f"genlab: measuring {self.describe(trainer)}{before} ...")
            self.take_measurement(trainer, pl_module)
            say(trainer, f"genlab: measured {self.describe(trainer)} in {duration(self.seconds)}.")
        if trainer.is_global_zero and self.last is not None:
            write_final_metrics(self.directory, self.final_metrics(trainer))
