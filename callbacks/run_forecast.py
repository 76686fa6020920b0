"""The first words of a run: where it writes, and, once its first batches are timed, how long it will
take. Without them a user of a 2-core machine waits for a run of unknown length."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

import lightning as L

from callbacks.console import duration, say
from callbacks.periodic import PeriodicMeasurement
from callbacks.run_outputs import run_directory
from core.errors import ConfigError


class RunForecast(L.Callback):
    """At the start of training, one line with the run folder and what the run will train; after
    ``timed_batches`` batches (the first ``warmup_batches`` not counted: allocation, first-call costs),
    one line with the time per batch and the estimated time left to ``max_epochs`` or ``max_steps``,
    whichever ends the run first (``max_steps`` counts optimizer steps: the timed batches say how many
    a batch takes). The measurements at epoch ends and after training are announced by
    :class:`~callbacks.periodic.PeriodicMeasurement` when they begin, and not in this estimate.

    The clock is read on the host, without waiting for the device (which would make a batch wait): on
    a GPU the last timed batches may still be queued when it stops, at most the launch queue's depth,
    a small share of ``timed_batches`` once the device sets the pace.

    Args:
        timed_batches: Batches timed before the estimate.
        warmup_batches: Batches run before the timing starts.
    """

    def __init__(self, timed_batches: int = 50, warmup_batches: int = 5) -> None:
        if timed_batches < 1 or warmup_batches < 0:
            raise ConfigError(
                f"RunForecast: timed_batches must be >= 1 and warmup_batches >= 0, got {timed_batches} and {warmup_batches}."
            )
        self.timed_batches, self.warmup_batches = timed_batches, warmup_batches

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_directory(trainer)  # on every rank: a collective under DDP

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches_seen, self.started_at = 0, None
        say(trainer, f"genlab: {self.folder.parent.name}: training in {self.folder}/ — {self.plan(trainer)}.")

    def plan(self, trainer: L.Trainer) -> str:
        parts = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            parts.append(f"to epoch {trainer.max_epochs} ({trainer.num_training_batches:,} batches each)")
        if trainer.max_steps > 0:
            parts.append(f"to optimizer step {trainer.max_steps:,}")
        plan = " or ".join(parts) or "until stopped"
        if trainer.current_epoch or trainer.global_step:
            plan += f", resuming at epoch {trainer.current_epoch + 1}, step {trainer.global_step:,}"
        measuring = [type(callback).__name__ for callback in trainer.callbacks if isinstance(callback, PeriodicMeasurement)]
        return plan + (f"; measured by {', '.join(measuring)}" if measuring else "")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.batches_seen == self.warmup_batches:
            self.started_at, self.steps_at_start = time.perf_counter(), trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches_seen += 1
        if self.batches_seen != self.warmup_batches + self.timed_batches:
            return
        seconds = (time.perf_counter() - self.started_at) / self.timed_batches
        steps_per_batch = (trainer.global_step - self.steps_at_start) / self.timed_batches
        left = self.batches_left(trainer, batch_idx, steps_per_batch)
        if math.isinf(left):
            say(trainer, f"genlab: {seconds * 1e3:.1f} ms per batch; no end set (max_epochs -1, no max_steps).")
            return
        finish = datetime.now() + timedelta(seconds=left * seconds)
        say(
            trainer,
            f"genlab: {seconds * 1e3:.1f} ms per batch: {left:,.0f} batches left, about {duration(left * seconds)} "
            f"of training (until about {finish:%H:%M}), plus the measurements.",
        )

    @staticmethod
    def batches_left(trainer: L.Trainer, batch_idx: int, steps_per_batch: float) -> float:
        left = math.inf
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            left = (trainer.max_epochs - trainer.current_epoch) * trainer.num_training_batches - (batch_idx + 1)
        if trainer.max_steps > 0 and steps_per_batch > 0:
            left = min(left, (trainer.max_steps - trainer.global_step) / steps_per_batch)
        return max(left, 0)
