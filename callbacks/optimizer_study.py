"""What the optimizer study reports: every run's test accuracy and training loss, the table of
optimizers × learning rates over seeds, and one training-loss figure per learning rate."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import lightning as L
import torch

from callbacks.image_splits_check import require_image_datamodule
from callbacks.plots import new_figure
from callbacks.run_outputs import log_scalars, run_directory, send_image_to_loggers, write_atomically, write_final_metrics
from core.errors import ConfigError


class OptimizerStudyReport(L.Callback):
    """For :class:`lightning_modules.OptimizerStudy`. After every epoch, each run's mean training
    loss and its loss and accuracy on the whole test split (logged as ``test/acc/<run>``); when
    training ends, in the run folder:

    - ``study.json``: per run its optimizer, rate, seed, test accuracy and loss, training loss per
      epoch (``null`` after it diverged), and ``diverged``: ``null``, or the epoch and the batch where
      its loss or gradient stopped being finite (batch ``null``: the epoch's mean loss exceeded the
      model's ``max_loss``); it was frozen there and its accuracy is not averaged;
    - ``table.md``: test accuracy (%) per optimizer × rate, mean ± std over the seeds that did not
      diverge, the diverged ones named with their epoch;
    - ``train_loss_lr_<rate>.png``: per rate, each optimizer's training loss against epoch, the
      mean over seeds with their range shaded.

    Rank zero only.
    """

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []  # one entry per epoch, kept in checkpoints

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "run_names"):
            raise ConfigError(
                "OptimizerStudyReport reports a population of runs (lightning_modules.OptimizerStudy), "
                f"not a {type(pl_module).__name__}: remove it."
            )
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)

    @torch.no_grad()
    def measure_test_split(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[list[float], list[float]]:
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        loss_sum, correct = 0.0, 0
        for chunk, chunk_labels in zip(images.split(datamodule.batch_size), labels.split(datamodule.batch_size)):
            losses, right = pl_module.evaluate(
                datamodule.normalize(chunk.to(pl_module.device)), chunk_labels.to(pl_module.device)
            )
            loss_sum, correct = loss_sum + losses * len(chunk), correct + right
        return (loss_sum / len(labels)).tolist(), (correct / len(labels)).tolist()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        test_loss, test_acc = self.measure_test_split(trainer, pl_module)
        self.history.append(
            {
                "epoch": trainer.current_epoch + 1,
                "train_loss": pl_module.epoch_train_loss().tolist(),
                "test_loss": test_loss,
                "test_acc": test_acc,
            }
        )
        log_scalars(trainer, {f"test/acc/{run}": acc for run, acc in zip(pl_module.run_names, test_acc)})

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        runs = self.run_results(pl_module)
        write_atomically(self.directory / "study.json", lambda tmp: Path(tmp).write_text(json.dumps(runs, indent=2)))
        table = study_table(runs, pl_module.optimizer_names, list(pl_module.hparams.learning_rates))
        write_atomically(self.directory / "table.md", lambda tmp: Path(tmp).write_text(table))
        for lr in pl_module.hparams.learning_rates:
            path = self.directory / f"train_loss_lr_{lr:g}.png"
            write_atomically(path, lambda tmp, lr=lr: draw_loss_curves(tmp, runs, pl_module.optimizer_names, lr))
            send_image_to_loggers(trainer, f"train_loss/lr_{lr:g}", path, caption=f"training loss at learning rate {lr:g}")
        write_final_metrics(
            self.directory,
            {f"test_acc/{run['name']}": run["test_acc"] for run in runs}
            | {"diverged_runs": sum(run["diverged"] is not None for run in runs)},
        )

    def run_results(self, pl_module: L.LightningModule) -> list[dict[str, Any]]:
        last = self.history[-1]
        results = []
        for r, (name, (optimizer, lr, seed)) in enumerate(zip(pl_module.run_names, pl_module.runs)):
            epoch = int(pl_module.diverged_epoch[r])
            batch = int(pl_module.diverged_batch[r])
            diverged = None if epoch < 0 else {"epoch": epoch + 1, "batch": batch if batch >= 0 else None}
            results.append(
                {
                    "name": name, "optimizer": optimizer, "lr": lr, "seed": seed,
                    "test_acc": last["test_acc"][r], "test_loss": last["test_loss"][r], "diverged": diverged,
                    "train_loss": [
                        loss if math.isfinite(loss) else None for loss in (entry["train_loss"][r] for entry in self.history)
                    ],
                }
            )  # fmt: skip
        return results


def study_table(runs: list[dict[str, Any]], optimizers: list[str], learning_rates: list[float]) -> str:
    """Markdown: one row per optimizer, one column per rate; test accuracy in %, mean ± std over the
    seeds that did not diverge; diverged seeds named, with the epoch, never silently left out."""
    lines = [
        "| optimizer | " + " | ".join(f"lr {lr:g}" for lr in learning_rates) + " |",
        "|---" * (len(learning_rates) + 1) + "|",
    ]
    for optimizer in optimizers:
        cells = []
        for lr in learning_rates:
            group = [run for run in runs if run["optimizer"] == optimizer and run["lr"] == lr]
            finished = [100 * run["test_acc"] for run in group if run["diverged"] is None]
            diverged = [run for run in group if run["diverged"] is not None]
            cell = (
                f"{statistics.mean(finished):.2f} ± {statistics.stdev(finished):.2f}"
                if len(finished) > 1
                else f"{finished[0]:.2f}"
                if finished
                else ""
            )
            if diverged:
                where = ", ".join(f"seed {run['seed']} epoch {run['diverged']['epoch']}" for run in diverged)
                cell = f"diverged ({where})" if not finished else f"{cell} ({len(finished)} of {len(group)}; diverged: {where})"
            cells.append(cell)
        lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_loss_curves(path: str, runs: list[dict[str, Any]], optimizers: list[str], lr: float) -> None:
    """Training loss against epoch at one rate: per optimizer the mean over its seeds (those not yet
    diverged at that epoch), their range shaded; a curve ends where its last seed diverged."""
    figure = new_figure(6.5, 4.2)
    axes = figure.subplots()
    for optimizer in optimizers:
        curves = [run["train_loss"] for run in runs if run["optimizer"] == optimizer and run["lr"] == lr]
        epochs, means, lows, highs = [], [], [], []
        for epoch, values in enumerate(zip(*curves), start=1):
            finite = [value for value in values if value is not None]
            if finite:
                epochs.append(epoch)
                means.append(statistics.mean(finite))
                lows.append(min(finite))
                highs.append(max(finite))
        if epochs:
            (line,) = axes.plot(epochs, means, marker=".", label=optimizer)
            axes.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2)
    axes.set(
        title=f"training loss, learning rate {lr:g} (mean over seeds, range shaded)",
        xlabel="epoch",
        ylabel="cross-entropy",
        yscale="log",
    )
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, format="png", dpi=110)
