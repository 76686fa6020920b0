"""Studies (study.py): workers on one database complete a grid with every point done exactly once, survive a
SIGKILL, a Ctrl-C and a failing config, search within a budget, and tabulate a partial study; on SQLite
and on a throwaway PostgreSQL server. The machinery's tests run tests/stand_in_train.py (same command
line as train.py, a tenth of a second a run); the last ones train for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from cli.run_metrics import read_curve, read_points
from core.errors import StudyError
from studies.report import mean_std
from studies.study_file import Objective
from tests.conftest import ROOT, fresh_database, study_cli

STAND_IN = ["tests/stand_in_train.py"]
FAST = ["--heartbeat", "1", "--grace", "2"]


# ---------------------------------------------------------------------------------------------- storages


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """Each database URL a study may run on; PostgreSQL needs a fresh database per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return fresh_database(request.getfixturevalue("postgres_server"), f"t{abs(hash(tmp_path)) % 10**9}")


# ---------------------------------------------------------------------------------------------- helpers


def write_study(tmp_path: Path, configs: dict[str, dict], seeds=(0, 1, 2), **extra) -> Path:
    """Stand-in configs (``{name: behaviour}``) and a study file over them."""
    for name, behaviour in configs.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(behaviour))
    spec = {
        "name": "test", "configs": [str(tmp_path / f"{name}.yaml") for name in configs], "seeds": list(seeds),
        "metrics": ["score", "seed"], "out": str(tmp_path / "out"), "command": STAND_IN, **extra,
    }  # fmt: skip
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def worker(study: Path, storage: str, *extra: str, sigint_ignored: bool = False) -> subprocess.Popen:
    """A worker process; ``sigint_ignored``: started as a shell starts a background job (``nohup ... &``)."""
    command = [sys.executable, str(ROOT / "study.py"), "run", str(study), "--storage", storage, *FAST, *extra]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ignore)  # noqa: PLW1509


def finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="test", storage=storage).get_trials()


def starts(tmp_path: Path) -> list[dict]:
    path = tmp_path / "starts.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def completed_points(storage: str) -> list[tuple[str, int]]:
    return sorted((Path(t.params["config"]).stem, t.params["seed"]) for t in trials(storage) if t.state == TrialState.COMPLETE)


# ---------------------------------------------------------------------------------------------- grids


@pytest.mark.slow
def test_two_workers_complete_a_grid_with_each_point_done_exactly_once(tmp_path, storage):
    study = write_study(tmp_path, {"a": {"score": 10, "sleep": 0.2}, "b": {"score": 20, "sleep": 0.2}})
    workers = [worker(study, storage)]
    time.sleep(0.5)
    workers.append(worker(study, storage))
    for process in workers:
        code, output = finish(process)
        assert code == 0, output
    grid = [(config, seed) for config in "ab" for seed in (0, 1, 2)]
    assert completed_points(storage) == grid
    assert sorted((s["config"], s["seed"]) for s in starts(tmp_path)) == grid  # and no run started twice
    assert all(t.state == TrialState.COMPLETE for t in trials(storage))
    assert {t.values[0] for t in trials(storage)} == {10, 11, 12, 20, 21, 22}  # objective: the first metric
    table = study_cli("table", study, storage)
    assert table.returncode == 0, table.stderr
    rows = [line.split(" | ") for line in (tmp_path / "out" / "table.md").read_text().splitlines()[2:]]
    assert [row[:3] for row in rows] == [["| a", "3/3", "11.0 ± 1.0"], ["| b", "3/3", "21.0 ± 1.0"]]


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_requeued_and_a_rerun_finishes_every_point_once(tmp_path, storage):
    study = write_study(tmp_path, {"a": {"sleep": 2.0}}, seeds=(0, 1))
    victim = worker(study, storage)
    deadline = time.monotonic() + 60
    while not starts(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert [t.state for t in trials(storage)] == [TrialState.RUNNING, TrialState.WAITING]  # the dead worker's trial
    time.sleep(2.5)  # > grace: its heartbeat is stale
    code, output = finish(worker(study, storage))
    assert code == 0, output
    assert completed_points(storage) == [("a", 0), ("a", 1)]
    killed, *_, retried = [t for t in trials(storage) if t.params["seed"] == 0]
    assert killed.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.system_attrs["failed_trial"] == killed.number
    # the killed run had nothing to resume: its folder is kept aside and the point started over
    assert (tmp_path / "out" / "a" / "seed_0.attempt_1").is_dir()
    assert sorted(s["seed"] for s in starts(tmp_path)) == [0, 0, 1]


@pytest.mark.slow
def test_a_failing_config_is_recorded_with_its_reason_and_the_others_complete(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"good": {"score": 1}, "bad": {"fail": "model.n_critic must be >= 1, got 0."}}, seeds=(0, 1))
    code, output = finish(worker(study, storage))
    assert code == 1  # something this worker ran failed
    assert "bad seed 0: fail (genlab: error: model.n_critic must be >= 1, got 0.)" in output
    assert completed_points(storage) == [("good", 0), ("good", 1)]
    failed = [t for t in trials(storage) if t.state == TrialState.FAIL]
    assert [t.user_attrs["reason"] for t in failed] == ["genlab: error: model.n_critic must be >= 1, got 0."] * 2
    status = study_cli("status", study, storage)
    assert "test: 2/4 done; 2 complete, 2 fail" in status.stdout
    # A rerun retries the failed points (still failing), and never the completed ones.
    code, _ = finish(worker(study, storage))
    assert code == 1 and [s["config"] for s in starts(tmp_path)].count("good") == 2
    table = study_cli("table", study, storage).stdout
    assert "| good | 2/2 | 1.50 ± 0.71 |" in table and "| bad | 0/2 | – | – |" in table


@pytest.mark.slow
def test_the_table_of_a_study_in_progress_counts_what_is_done(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"quick": {"score": 7}, "slow": {"score": 5, "sleep": 60}}, seeds=(0,))
    running = worker(study, storage, sigint_ignored=True)  # Ctrl-C still stops it (study.py restores SIGINT)
    deadline = time.monotonic() + 60
    while len(starts(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    table = study_cli("table", study, storage).stdout
    status = study_cli("status", study, storage).stdout
    running.send_signal(signal.SIGINT)
    code, output = finish(running)
    assert "| quick | 1/1 | 7.00 ± 0.00 |" in table and "| slow | 0/1 | – |" in table
    assert "running  slow seed 0" in status and "test: 1/2 done" in status
    # Ctrl-C: the run stops, its trial goes back to the queue, the exit code says so
    assert code == 130, output
    assert [t.state for t in trials(storage)] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert "interrupted" in trials(storage)[1].user_attrs["reason"]


@pytest.mark.slow
def test_workers_on_gpus_each_see_only_their_gpu(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"a": {"sleep": 2.5}}, seeds=(0, 1))  # longer than the 1 s between the workers' starts
    code, output = finish(worker(study, storage, "--gpus", "3", "5"))
    assert code == 0, output
    runs = starts(tmp_path)
    assert sorted(run["cuda_visible_devices"] for run in runs) == ["3", "5"]
    assert all(run["argv"][run["argv"].index("--trainer.accelerator") + 1] == "gpu" for run in runs)


# ---------------------------------------------------------------------------------------------- searches


@pytest.mark.slow
def test_a_search_spends_its_budget_and_tables_the_best_trial_first(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    search = {
        "space": {"x": "uniform 0..1"},
        "trials": 6,
        "sampler": {"class_path": "optuna.samplers.RandomSampler", "init_args": {"seed": 0}},
    }
    study = write_study(
        tmp_path, {"a": {"score": 1}}, seeds=(0,), search=search, objective={"value": "score", "direction": "maximize"}
    )
    workers = [worker(study, storage), worker(study, storage)]
    for process in workers:
        code, output = finish(process)
        assert code == 0, output
    done = [t for t in trials(storage) if t.state == TrialState.COMPLETE]
    assert 6 <= len(done) <= 7  # two workers that look at the same moment may each start the last one
    assert all(t.value == pytest.approx(1 - (t.params["x"] - 0.3) ** 2) for t in done)
    assert sorted(float(s["argv"][s["argv"].index("--x") + 1]) for s in starts(tmp_path)) == sorted(t.params["x"] for t in done)
    rows = study_cli("table", study, storage).stdout.splitlines()[2 : 2 + len(done)]
    best = max(done, key=lambda t: t.value)
    assert rows[0].startswith(f"| {best.number} | {best.params['x']:.3g} |")


def test_the_objective_is_arithmetic_over_metrics_and_nothing_else():
    objective = Objective("high_quality * min(modes, 8) / 8")
    assert objective({"high_quality": 0.9, "modes": 6, "kl": 1.0}) == pytest.approx(0.675)
    assert objective.names() == {"high_quality", "modes"}
    with pytest.raises(KeyError, match="needs modes"):
        objective({"high_quality": 0.9})
    with pytest.raises(StudyError, match="is not allowed"):
        Objective("__import__('os').system('true')")({})


@pytest.mark.slow
def test_a_bad_study_file_is_one_line_naming_the_fix(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"a": {}}, search={"space": {"model.init_args.lr_d": "loguniform 1e-5..1e-3"}, "trials": 4})
    result = study_cli("run", study, storage)
    assert result.returncode == 2
    expected = (
        "study: error: search.space.model.init_args.lr_d: 'loguniform 1e-5..1e-3' is not one of: "
        "log-uniform A..B, uniform A..B, int A..B, log-int A..B, choice X, Y, Z."
    )
    assert result.stderr.strip().splitlines() == [expected]
    assert study_cli("run", tmp_path / "missing.yaml", storage).stderr.startswith("study: error: no such study file")


def test_a_grid_table_gives_the_standard_deviation_or_where_asked_the_standard_error():
    assert mean_std([1.0, 2.0, 3.0, 4.0], percent=False) == "2.50 ± 1.29"  # sample std: sqrt(5/3)
    assert mean_std([1.0, 2.0, 3.0, 4.0], percent=False, standard_error=True) == "2.50 ± 0.65"  # / sqrt(4)
    assert mean_std([0.9, 0.95, 1.0], percent=True, standard_error=True) == "95.0 ± 2.9"


# ---------------------------------------------------------------------------------------------- curves


def test_a_metric_logged_several_times_an_epoch_is_read_in_order_across_segments(tmp_path):
    (tmp_path / "metrics_segment_1.csv").write_text("epoch,step,train/running_loss,train/loss\n0,10,2.3,\n0,20,2.1,\n0,20,,2.2\n")
    (tmp_path / "metrics.csv").write_text("epoch,step,train/running_loss\n1,30,1.9\n1,40,1.8\n")
    assert read_points(tmp_path, "train/running_loss") == [(1, 2.3), (2, 2.1), (3, 1.9), (4, 1.8)]
    assert read_curve(tmp_path, "train/running_loss") == [(1, 2.3), (1, 2.1), (2, 1.9), (2, 1.8)]


# ---------------------------------------------------------------------------------------------- real runs


def test_the_pruning_callback_reports_each_evaluation_and_stops_a_run_the_pruner_prunes(tmp_path, make_trainer):
    import torch
    from lightning.pytorch.loggers import CSVLogger

    from callbacks import MixtureMetrics
    from callbacks.optuna_pruning import OptunaPruning
    from datamodules import Ring8DataModule
    from lightning_modules import WGAN
    from tests.conftest import SMALL_WGAN

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    pruner = {"class_path": "optuna.pruners.ThresholdPruner", "init_args": {"lower": 0.5, "n_warmup_steps": 25}}
    optuna.create_study(study_name="search", storage=storage, direction="maximize").ask()
    callbacks = [
        MixtureMetrics(every_n_iterations=5, num_samples=200),
        OptunaPruning(storage, "search", 0, "high_quality * modes / 8", pruner),
    ]
    trainer = make_trainer(
        max_steps=300, callbacks=callbacks, logger=CSVLogger(tmp_path, name="run", version="v"), log_every_n_steps=10
    )
    torch.manual_seed(0)
    trainer.fit(WGAN(**SMALL_WGAN), Ring8DataModule(num_samples=640, batch_size=64))
    trial = optuna.load_study(study_name="search", storage=storage).trials[0]
    # every 5 critic iterations (batches) a report; after the warm-up, a value under 0.5 stops the run
    batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1
    reported = sorted(trial.intermediate_values)
    assert reported[:3] == [5, 10, 15] and reported[-1] == batches and 25 <= batches < 250
    assert trial.intermediate_values[batches] < 0.5
    pruned = json.loads((tmp_path / "run" / "v" / "pruned.json").read_text())
    assert pruned["batches"] == batches and pruned["reason"].startswith(
        f"pruned after {batches} batches: high_quality * modes / 8 = "
    )
    assert (tmp_path / "run" / "v" / "final_metrics.json").exists()  # a pruned run still writes its numbers


@pytest.mark.slow
def test_a_real_study_interrupted_by_ctrl_c_resumes_its_run_from_last_ckpt(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = {
        "name": "test", "configs": ["configs/wgan_ring8_spectral_norm.yaml"], "seeds": [0], "out": str(tmp_path / "out"),
        "train_args": ["--trainer.max_steps", "600", "--data.init_args.num_samples", "640"], "metrics": ["modes", "iteration"],
    }  # fmt: skip
    study = tmp_path / "test.yaml"
    study.write_text(yaml.safe_dump(spec))
    run = tmp_path / "out" / "wgan_ring8_spectral_norm" / "seed_0"
    first = worker(study, storage)
    deadline = time.monotonic() + 120
    while not (run / "hparams.yaml").exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    code, output = finish(first)
    assert code == 130 and "interrupted; the trial is back in the queue" in output, output
    assert (run / "checkpoints" / "last.ckpt").exists()
    code, output = finish(worker(study, storage))
    assert code == 0, output
    log = (run.parent / "seed_0.log").read_text()
    assert log.count("Restoring states from the checkpoint") == 1 and log.count("$ ") == 2
    interrupted, resumed = trials(storage)
    assert interrupted.state == TrialState.FAIL and resumed.state == TrialState.COMPLETE
    metrics = resumed.user_attrs["metrics"]
    assert metrics["iteration"] == 500 and metrics["wall_seconds"] == pytest.approx(
        sum(json.loads((run.parent / "seed_0.segments.json").read_text()))
    )
    assert (run / "wandb").is_dir()  # its W&B run (offline), grouped by study


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "studies").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_study_file_loads_with_configs_that_exist(path):
    from studies.study_file import Study

    study = Study.load(path)
    assert study.name == path.stem and study.points() and study.objective.names() <= {m.removesuffix(":%") for m in study.metrics}
