"""The last words of a finished run: what it made, where, what its numbers mean, and what to type next."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from callbacks.console import duration, say
from callbacks.run_outputs import run_directory
from core.commands import script_command, without_option


class RunSummary(L.Callback):
    """When ``fit`` finishes (not when it is stopped: the stop prints the resume command), a few lines
    on the console: the run folder and the figures in it, the headline numbers of ``final_metrics.json``
    with what to compare them with (each measuring callback's ``headline``), how to upload the W&B run,
    and the command that trains the run further. The W&B run also gets ``final_metrics.json``: its
    scalars as the run's summary, the file among its files.

    Args:
        command_args: The arguments ``train.py`` was given, for the command that trains further.
    """

    def __init__(self, command_args: Sequence[str] = ()) -> None:
        self.command_args = list(command_args)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.folder = run_directory(trainer)  # on every rank: a collective under DDP

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not hasattr(self, "started"):
            return
        metrics_file = self.folder / "final_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        self.give_to_wandb(trainer, metrics, metrics_file)
        took = duration(time.perf_counter() - self.started)
        lines = [
            f"{self.folder.parent.name} finished at epoch {trainer.current_epoch}, step {trainer.global_step:,} ({took} here).",
            f"outputs in {self.folder}/: {', '.join(self.outputs())}",
        ]
        for callback in trainer.callbacks:
            headline = getattr(callback, "headline", None)
            lines += headline(metrics) if callable(headline) and metrics else []
        lines += self.wandb_lines(trainer)
        if trainer.checkpoint_callback is not None and not trainer.fast_dev_run:  # a smoke run is not one to continue
            lines.append(f"train further: {self.further_command(trainer)}")
        for line in lines:
            say(trainer, f"genlab: {line}")

    def outputs(self) -> list[str]:
        """The run folder's figures and files, a folder of figures as one entry (``samples/ (3 PNGs: ...)``)."""
        entries = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir():
                figures = sorted(path.rglob("*.png"))
                if figures:
                    shown = figures[0].name if len(figures) == 1 else f"{figures[0].name} … {figures[-1].name}"
                    entries.append(f"{path.name}/ ({len(figures)} PNG: {shown})")
                elif path.name == "checkpoints":
                    entries.append("checkpoints/last.ckpt")
            else:
                entries.append(path.name)
        return entries

    def further_command(self, trainer: L.Trainer) -> str:
        """This run's command, resumed from its ``last.ckpt``, with twice the epochs (or steps) it had."""
        args = without_option(self.command_args, "--ckpt_path")
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            args = [*without_option(args, "--trainer.max_epochs"), "--trainer.max_epochs", str(2 * trainer.max_epochs)]
        elif trainer.max_steps > 0:
            args = [*without_option(args, "--trainer.max_steps"), "--trainer.max_steps", str(2 * trainer.max_steps)]
        return script_command("train.py", [*args, "--ckpt_path", str(self.folder / "checkpoints" / "last.ckpt")])

    @staticmethod
    def wandb_runs(trainer: L.Trainer) -> list[Any]:
        return [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    def give_to_wandb(self, trainer: L.Trainer, metrics: dict[str, Any], metrics_file: Path) -> None:
        for run in self.wandb_runs(trainer):
            run.summary.update({name: value for name, value in metrics.items() if isinstance(value, int | float)})
            if metrics_file.is_file():  # into the run's files folder: ``wandb sync`` uploads what is there
                shutil.copyfile(metrics_file, Path(run.dir) / metrics_file.name)

    def wandb_lines(self, trainer: L.Trainer) -> list[str]:
        lines = []
        for run in self.wandb_runs(trainer):
            if run.offline:
                lines.append(f"W&B run (offline): upload it with `wandb sync {relative(Path(run.dir).parent)}`")
            else:
                lines.append(f"W&B run: {run.url}")
        return lines


def relative(path: Path) -> Path:
    """``path`` relative to the working folder where it is inside it, as the user would type it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
