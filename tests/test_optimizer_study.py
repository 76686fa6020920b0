"""The optimizer study's population: each run as it would train alone, divergence recorded and
contained, resume equal to an uninterrupted run, and the report's table."""

from __future__ import annotations

import json
import math
from functools import partial

import lightning as L
import pytest
import torch

from callbacks import OptimizerStudyReport
from callbacks.batch_contract import RequireBatchesTheModelAccepts
from callbacks.optimizer_study import study_table
from core.errors import ConfigError, DataConfigError
from datamodules import MNISTDataModule
from datamodules.population import data_order_seed
from lightning_modules import Classifier, OptimizerStudy
from lightning_modules.components.lenet import LeNet
from lightning_modules.components.mlp import MLPClassifier
from lightning_modules.components.optimizers import SGD, Adam, AMSGrad, HeavyBall, RMSProp

STUDY_DATA = {"batch_size": 128, "normalization": "mean_std", "val_size": 0, "drop_last": False}
OPTIMIZERS = {"SGD": SGD, "HeavyBall": partial(HeavyBall, momentum=0.9), "RMSProp": RMSProp, "AMSGrad": AMSGrad, "Adam": Adam}
SMALL = partial(MLPClassifier, hidden=(16,))


def run_weights(study: OptimizerStudy, run: int) -> torch.Tensor:
    runs_per_optimizer = len(study.runs) // len(study.stacks)
    stack = study.stacks[run // runs_per_optimizer]
    return torch.cat([parameter[run % runs_per_optimizer].detach().flatten() for parameter in stack])


@pytest.mark.parametrize("precision, optimizers", [("64-true", list(OPTIMIZERS)), ("32-true", ["SGD", "HeavyBall"])])
def test_a_run_inside_the_population_ends_with_the_weights_it_reaches_alone(real_mnist, make_trainer, precision, optimizers):
    """Alone = lightning_modules.Classifier, seeded like a single run, with the run's data order; 24
    steps. In float32 the adaptive rules are left out: they divide by √m₂, so an entry whose gradient
    sums to nearly 0 moves by ~γ whatever its rounding, and the population's batched matrix products
    round differently from one run's (0.1 % of the entries then differ by more than 1e-5;
    docs/optimizers.md). In float64 every rule agrees."""
    seeds = [0, 1]
    # max_loss inf: over 12-batch epochs RMSProp's first-step spike (~10γ a weight) would count as a divergence
    study = OptimizerStudy([OPTIMIZERS[name] for name in optimizers], learning_rates=[1e-2], seeds=seeds, max_loss=math.inf)
    fit = partial(make_trainer, max_epochs=2, limit_train_batches=12, limit_val_batches=0, precision=precision)
    fit().fit(study, MNISTDataModule(data_dir=str(real_mnist), population_seeds=seeds, **STUDY_DATA))
    for run, (name, lr, seed) in enumerate(study.runs):
        if seed != 1:
            continue
        L.seed_everything(seed, verbose=False)
        alone = Classifier(network=MLPClassifier, optimizer=partial(OPTIMIZERS[name], lr=lr))
        fit().fit(alone, MNISTDataModule(data_dir=str(real_mnist), shuffle_seed=data_order_seed(0, seed), **STUDY_DATA))
        alone_weights = torch.cat([p.detach().flatten() for p in alone.network.parameters()])
        assert (run_weights(study, run) - alone_weights).abs().max() <= 1e-5, name
        assert (run_weights(study, run) - run_weights(study, run - 1)).abs().max() > 1e-3  # seeds differ


def test_diverged_runs_are_recorded_frozen_and_leave_the_others_untouched(synthetic_mnist, make_trainer, tmp_path):
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), population_seeds=[0, 1], **{**STUDY_DATA, "batch_size": 32})
    study = OptimizerStudy([SGD, Adam], network=SMALL, learning_rates=[1e30, 1e-2], seeds=[0, 1])
    report = OptimizerStudyReport()
    make_trainer(max_epochs=3, limit_val_batches=0, callbacks=[report]).fit(study, datamodule)
    calm = OptimizerStudy([SGD, Adam], network=SMALL, learning_rates=[1e-2], seeds=[0, 1])
    make_trainer(max_epochs=3, limit_val_batches=0).fit(calm, datamodule)

    diverged = [run for run, (_, lr, _) in enumerate(study.runs) if lr == 1e30]
    assert study.alive.tolist() == [lr != 1e30 for _, lr, _ in study.runs]
    assert all(study.diverged_epoch[run] == 0 and study.diverged_batch[run] >= 0 for run in diverged)
    for run in range(len(study.runs)):
        assert run_weights(study, run).isfinite().all()  # frozen before a NaN could land
    for calm_run, run in enumerate(run for run in range(len(study.runs)) if run not in diverged):
        assert torch.allclose(run_weights(study, run), run_weights(calm, calm_run), atol=1e-6)

    results = {run["name"]: run for run in json.loads((tmp_path / "study.json").read_text())}
    assert results["SGD_lr1e+30_seed1"]["diverged"]["epoch"] == 1 and results["SGD_lr0.01_seed1"]["diverged"] is None
    assert results["SGD_lr1e+30_seed1"]["train_loss"][1:] == [None, None]  # no loss after it diverged
    table = (tmp_path / "table.md").read_text()
    assert "| SGD | diverged (seed 0 epoch 1, seed 1 epoch 1) | " in table
    assert json.loads((tmp_path / "final_metrics.json").read_text())["diverged_runs"] == 4
    assert (tmp_path / "train_loss_lr_0.01.png").stat().st_size > 0 and (tmp_path / "train_loss_lr_1e+30.png").is_file()


def test_the_table_averages_the_runs_that_finished_and_names_the_rest():
    def run(seed, acc, diverged_epoch=None):
        return {
            "optimizer": "SGD",
            "lr": 0.5,
            "seed": seed,
            "test_acc": acc,
            "diverged": diverged_epoch and {"epoch": diverged_epoch, "batch": 3},
        }

    table = study_table([run(0, 0.90), run(1, 0.92), run(2, 0.10, diverged_epoch=4)], ["SGD"], [0.5])
    assert table.splitlines()[2] == "| SGD | 91.00 ± 1.41 (2 of 3; diverged: seed 2 epoch 4) |"
    assert study_table([run(0, 0.9)], ["SGD"], [0.5]).splitlines()[2] == "| SGD | 90.00 |"


def test_resuming_from_a_checkpoint_equals_training_straight_through(synthetic_mnist, make_trainer, tmp_path):
    def fit(max_epochs: int, ckpt_path=None, root=tmp_path) -> tuple[OptimizerStudy, OptimizerStudyReport]:
        study = OptimizerStudy([HeavyBall, AMSGrad], network=SMALL, learning_rates=[1e-2, 1e-3], seeds=[0, 1])
        report = OptimizerStudyReport()
        trainer = make_trainer(
            max_epochs=max_epochs, limit_val_batches=0, callbacks=[report], enable_checkpointing=True, default_root_dir=root
        )
        datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), population_seeds=[0, 1], **{**STUDY_DATA, "batch_size": 32})
        trainer.fit(
            study, datamodule, ckpt_path=ckpt_path, weights_only=False
        )  # our own file; its hyperparameters hold a partial
        return study, report

    straight, straight_report = fit(3, root=tmp_path / "straight")
    fit(1, root=tmp_path / "interrupted")
    (checkpoint,) = (tmp_path / "interrupted").rglob("*.ckpt")
    resumed, resumed_report = fit(3, ckpt_path=checkpoint, root=tmp_path / "interrupted")
    for run in range(len(straight.runs)):
        assert torch.equal(run_weights(straight, run), run_weights(resumed, run))
    assert resumed_report.history == straight_report.history and len(straight_report.history) == 3


def test_a_population_refuses_what_its_runs_cannot_share(synthetic_mnist, make_trainer):
    with pytest.raises(ConfigError, match="buffers or dropout"):
        OptimizerStudy([SGD], network=LeNet)
    with pytest.raises(ConfigError, match="seeds must differ"):
        OptimizerStudy([SGD], seeds=[0, 0])
    per_item = MNISTDataModule(data_dir=str(synthetic_mnist), in_memory=False, population_seeds=[0, 1, 2], **STUDY_DATA)
    with pytest.raises(DataConfigError, match="set data.in_memory: true"):
        make_trainer(max_epochs=1).fit(OptimizerStudy([SGD], network=SMALL), per_item)
    one_run = MNISTDataModule(
        data_dir=str(synthetic_mnist), **STUDY_DATA
    )  # no population_seeds: train.py links them from model.seeds
    with pytest.raises(DataConfigError, match="give data.population_seeds the model's seeds"):
        make_trainer(max_epochs=1, callbacks=[RequireBatchesTheModelAccepts()]).fit(OptimizerStudy([SGD], network=SMALL), one_run)


def test_an_epoch_whose_mean_loss_exceeds_max_loss_stops_the_run_at_its_end(synthetic_mnist, make_trainer):
    """Random synthetic images keep the cross-entropy near log 10 = 2.3: with max_loss 2.0 every run
    is stopped after its first epoch, and a second epoch leaves it as the first left it."""

    def fit(max_epochs: int) -> OptimizerStudy:
        study = OptimizerStudy([SGD], network=SMALL, learning_rates=[1e-2], seeds=[0, 1], max_loss=2.0)
        make_trainer(max_epochs=max_epochs, limit_val_batches=0).fit(
            study, MNISTDataModule(data_dir=str(synthetic_mnist), population_seeds=[0, 1], **{**STUDY_DATA, "batch_size": 32})
        )
        return study

    one, two = fit(1), fit(2)
    assert (
        two.alive.tolist() == [False, False] and two.diverged_epoch.tolist() == [0, 0] and two.diverged_batch.tolist() == [-1, -1]
    )
    assert all(torch.equal(run_weights(one, run), run_weights(two, run)) for run in range(2))
    with pytest.raises(ConfigError, match="max_loss must be > 0"):
        OptimizerStudy([SGD], max_loss=0.0)
