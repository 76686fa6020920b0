"""What genlab tells the user during a run: one line at a time, from global rank zero, on stdout,
written above the progress bar (``tqdm.write`` lifts the bar and draws it again), before a bar
exists and after it is closed too (where Lightning's ``ProgressBar.print`` writes nothing)."""

from __future__ import annotations

import sys

import lightning as L
from tqdm import tqdm

from callbacks.run_outputs import MEASURED_MEMBER


def say(trainer: L.Trainer, message: str) -> None:
    measured = MEASURED_MEMBER.get()
    if measured is not None:  # a population's member, measured by a single run's callback
        message = message.replace("genlab: ", f"genlab: member {measured[0]}: ", 1)
    if trainer.is_global_zero:
        tqdm.write(message, file=sys.stdout)
        sys.stdout.flush()


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``: a length of time as a reader rounds it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
