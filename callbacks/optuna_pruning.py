"""Report a run's periodic evaluation to its Optuna trial and stop the run when the study's pruner says
so: how ``study.py`` searches without finishing every hopeless run. The objective and the pruner are
the study file's (``studies.study_file``, the one module of ``studies/`` below the callbacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import optuna

from callbacks.run_outputs import run_directory, write_atomically
from studies.study_file import PRUNED_FILE, Objective, instantiate


class OptunaPruning(L.Callback):
    """Each time the run's evaluation metrics (``<prefix><name>`` in ``trainer.callback_metrics``)
    are logged anew, report ``objective`` (an expression over those names, as in the study file) to trial
    ``trial_number`` of ``study_name`` at the count of training batches so far (critic iterations
    for a WGAN: one axis for every ``n_critic``, unlike optimizer steps); if ``pruner`` (the study file's
    ``{class_path, init_args}``) prunes, stop the run at this batch and write ``pruned.json``. The
    run still ends normally (its final metrics are written): a pruned trial keeps its numbers."""

    def __init__(
        self, storage: str, study_name: str, trial_number: int, objective: str, pruner: dict | None = None, prefix: str = "eval/"
    ) -> None:
        self.storage, self.study_name, self.trial_number, self.prefix = storage, study_name, trial_number, prefix
        self.pruner = pruner
        self.objective = Objective(objective)
        self.last_reported: tuple | None = None
        self.trial: optuna.Trial | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)
        if trainer.is_global_zero:
            storage = optuna.storages.RDBStorage(self.storage)
            study = optuna.load_study(
                study_name=self.study_name, storage=storage, pruner=instantiate(self.pruner, optuna.pruners.NopPruner())
            )
            study_id = storage.get_study_id_from_name(self.study_name)
            self.trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        prune = False
        if trainer.is_global_zero:
            # A new evaluation puts new tensors there (held here, so they are compared by identity, not value).
            logged = tuple(trainer.callback_metrics.get(self.prefix + name) for name in sorted(self.objective.names()))
            if None not in logged and (self.last_reported is None or any(a is not b for a, b in zip(logged, self.last_reported))):
                self.last_reported = logged
                metrics = {
                    key.removeprefix(self.prefix): float(value)
                    for key, value in trainer.callback_metrics.items()
                    if key.startswith(self.prefix)
                }
                value, batches = self.objective(metrics), trainer.fit_loop.epoch_loop.total_batch_idx + 1
                self.trial.report(value, batches)  # NaN: the pruners prune it
                prune = self.trial.should_prune()
                if prune:
                    reason = f"pruned after {batches} batches: {self.objective.value} = {value:.4g}"
                    record = json.dumps({"batches": batches, "reason": reason})
                    write_atomically(self.directory / PRUNED_FILE, lambda path: Path(path).write_text(record))
        if trainer.strategy.broadcast(prune):
            trainer.should_stop = True
