"""How a run that does not finish ends: one line on stderr, an exit code, and nothing half-written.

- stopped by SIGINT/SIGTERM while training: ``last.ckpt`` was saved (``SaveOnInterrupt``); print the
  resume command, exit 128 + the signal;
- stopped outside the training loop (:class:`core.stopping.Stopped`): before training, a fresh run's
  folder is removed; after it, the trained weights are named;
- an error the user can fix (:func:`cli.error_lines.user_message`): ``genlab: error: <the fix>``, exit 2,
  a fresh run that had not started training removed.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import NoReturn

from jsonargparse import ArgumentError
from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.run_guards import SaveOnInterrupt
from cli import run_folder
from cli.error_lines import as_typed, did_you_mean, one_line, user_message
from core import errors
from core.commands import script_command, without_option
from core.stopping import Stopped


def end_run(error: BaseException, interrupt: SaveOnInterrupt, args: list[str]) -> None:
    """Exit as described above, or return if ``error`` is not one of those (the caller re-raises it)."""
    if isinstance(error, ArgumentError):
        fail(as_typed(f"{one_line(str(error))}{did_you_mean(error, args)} (the options: python train.py fit --help)", args))
    if isinstance(error, SIGTERMException):  # raised by Lightning's loops only, after SaveOnInterrupt saved the checkpoint
        received = interrupt.received
        close_wandb(128 + received)
        resume = script_command("train.py", [*without_option(args, "--ckpt_path"), "--ckpt_path", str(interrupt.checkpoint)])
        print(
            f"genlab: stopped by {received.name} at epoch {interrupt.epoch}, step {interrupt.step}; "
            f"saved {interrupt.checkpoint}. "
            f"Resume: {resume}",
            file=sys.stderr,
        )
        sys.exit(128 + received)
    if isinstance(error, Stopped):
        code, name = 128 + error.signal, error.signal.name
        if interrupt.trained:
            fail(
                (
                    f"stopped by {name} after training, during the final measurements; "
                    f"the trained weights are in {interrupt.checkpoint_folder}/."
                ),
                code,
            )
        if not interrupt.started and discard_unstarted_run(code):
            fail(f"stopped by {name} before training started; nothing was written.", code)
        fail(f"stopped by {name} before training started; nothing was trained, the run's files are as they were.", code)
    message = user_message(error) if isinstance(error, Exception) else None
    if message is not None:
        if not interrupt.started:
            discard_unstarted_run(errors.USER_ERROR_EXIT)
        fail(as_typed(message, args))


def fail(message: str, code: int = errors.USER_ERROR_EXIT) -> NoReturn:
    close_wandb(code)
    errors.fail("genlab", message, code)


def discard_unstarted_run(code: int) -> bool:
    """A fresh run that ended before its first training step: remove its folder and its W&B run, so
    that nothing half-written is left and the version number is free again. Returns whether there was
    one (a resume's folder is the run's own, and stays)."""
    wandb_folder = wandb_run_folder()
    close_wandb(code)
    removed = run_folder.remove_fresh_claims()
    if removed and wandb_folder is not None:
        shutil.rmtree(wandb_folder, ignore_errors=True)
    return removed


def wandb_run_folder() -> Path | None:
    """The folder of this process's open W&B run (``runs/wandb/offline-run-...``), if one is open."""
    wandb = sys.modules.get("wandb")
    return Path(wandb.run.dir).parent if wandb is not None and wandb.run is not None else None


def close_wandb(code: int) -> None:
    """End an open W&B run now, so that its closing words come before genlab's last line, not after."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=code)
