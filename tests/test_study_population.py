"""A study file's ``population: true``: the waiting seeds of a variant train as one population in one process,
the study still records one trial per (config, seed) with that member's metrics, its folders and curves read as
single runs', and a stopped population goes back to the queue, and resumes, as one."""

from __future__ import annotations

import json
import signal
import time

import pytest
from optuna.trial import TrialState

from cli.run_metrics import read_curve
from core.errors import StudyError
from studies.study_file import Study
from tests.test_study import finish, starts, study_cli, trials, worker, write_study


def test_the_seeds_of_each_config_train_as_one_population_and_are_recorded_one_trial_each(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"a": {"score": 10.0}, "b": {"score": 20.0}}, population=True)
    code, output = finish(worker(study, storage))
    assert code == 0, output
    assert sorted(
        (start["config"], json.loads(start["argv"][start["argv"].index("--model.init_args.seeds") + 1]))
        for start in starts(tmp_path)
    ) == [
        ("a", [0, 1, 2]),
        ("b", [0, 1, 2]),
    ]  # one process per config, its three seeds together
    done = {(t.params["config"].rsplit("/", 1)[-1], t.params["seed"]): t.user_attrs["metrics"] for t in trials(storage)}
    assert all(t.state == TrialState.COMPLETE for t in trials(storage)) and len(done) == 6
    for (config, seed), metrics in done.items():
        assert metrics["score"] == pytest.approx({"a.yaml": 10.0, "b.yaml": 20.0}[config] + seed)
        assert metrics["population"] == 3
    walls = {metrics["wall_seconds"] for (config, _), metrics in done.items() if config == "a.yaml"}
    assert len(walls) == 1  # the members' process: one wall time
    seed_1 = tmp_path / "out" / "a" / "seed_1"
    assert seed_1.is_symlink() and seed_1.resolve() == (tmp_path / "out" / "a" / "seeds_0_1_2" / "member_1").resolve()
    assert read_curve(seed_1, "score") == [(1, 11.0), (2, 12.0)]  # the member's own column, not the mean
    table = study_cli("table", study, storage)
    assert table.returncode == 0 and "| a | 3/3 | 11.0 ± 1.0 | 1.00 ± 1.00 |" in table.stdout, table.stdout
    assert "population" in output


def test_a_stopped_population_is_requeued_together_and_resumes_as_one(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    study = write_study(tmp_path, {"slow": {"score": 1.0, "sleep": 30}}, population=True)
    process = worker(study, storage)
    deadline = time.monotonic() + 60
    while not starts(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == 130 and "interrupted; the trial is back in the queue" in output, output
    waiting = [t for t in trials(storage) if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["fixed_params"]["seed"] for t in waiting) == [0, 1, 2]
    (tmp_path / "slow.yaml").write_text("score: 1.0\n")
    code, output = finish(worker(study, storage))
    assert code == 0, output
    seeds = [json.loads(start["argv"][start["argv"].index("--model.init_args.seeds") + 1]) for start in starts(tmp_path)]
    assert seeds == [[0, 1, 2], [0, 1, 2]]  # again one process of the three
    assert sorted(t.params["seed"] for t in trials(storage) if t.state == TrialState.COMPLETE) == [0, 1, 2]


def test_population_with_a_search_is_one_clear_line(tmp_path):
    path = tmp_path / "s.yaml"
    (tmp_path / "c.yaml").write_text("{}")
    path.write_text(
        json.dumps(
            {"configs": [str(tmp_path / "c.yaml")], "population": True, "search": {"space": {"x": "uniform 0..1"}, "trials": 2}}
        )
    )
    with pytest.raises(StudyError, match=r"population: true trains a grid's seeds together; a search samples"):
        Study.load(path)
