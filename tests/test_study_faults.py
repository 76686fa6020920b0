"""The study database's failures as a user meets them (``study.py run|table|status STUDY --storage URL`` in a
subprocess): each ends in one last line ``study: error: ...`` naming the URL, its password masked, and the likely
fix; exit code 2, no traceback, and the file or database as it was. On SQLite files and on a throwaway PostgreSQL
server (benchmarks/study_storage.py's); and the user's other faults, in the same one line: a study file changed
since its study began, or with a bad value or bad YAML, a bad option, an ``out:`` that cannot be written or that
holds another study's runs. And a worker Ctrl-C'd twice still puts its trial back in the queue."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psycopg
import pytest
import yaml

from tests.conftest import ROOT, digest, fresh_database, snapshot, study_cli

pytestmark = pytest.mark.slow
SECRET = "s3cret-pw"


# ---------------------------------------------------------------------------------------------- helpers


def one_line_error(result: subprocess.CompletedProcess, shown: str, *fix: str) -> str:
    """The checks every fault shares (``shown``: the URL or file the line names); returns the line for the fault's own checks."""
    last = (result.stderr.strip().splitlines() or [""])[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith("study: error: ") and shown in last, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout, result.stderr
    assert all(words in last for words in fix), last
    return last


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A study of two stand-in runs (tests/stand_in_train.py: a tenth of a second each)."""
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"score": 10}))
    spec = {
        "configs": [str(tmp_path / "a.yaml")],
        "seeds": [0, 1],
        "metrics": ["score", "seed"],
        "out": str(tmp_path / "out"),
        "command": ["tests/stand_in_train.py"],
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------------- SQLite


def test_a_file_of_random_bytes_is_refused_and_left_as_it_was(study_file, tmp_path):
    path = tmp_path / "studies.db"
    path.write_bytes(os.urandom(8192))
    before = digest(path)
    for action in ("run", "status"):
        one_line_error(
            study_cli(action, study_file, f"sqlite:///{path}"), f"sqlite:///{path}", "is not an SQLite database", "restore it"
        )
    assert digest(path) == before


@pytest.mark.parametrize("damage", ["truncated", "a page overwritten"])
def test_a_damaged_study_database_is_refused_and_left_as_it_was(study_file, tmp_path, damage):
    path = tmp_path / "studies.db"
    other = optuna.create_study(study_name="other", storage=f"sqlite:///{path}")
    for x in range(100):
        other.enqueue_trial({"x": x})
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2 * 4096  # a page in the middle: Optuna would write over it, were it not refused
    data = data[:middle] if damage == "truncated" else data[:middle] + os.urandom(4096) + data[middle + 4096 :]
    path.write_bytes(data)
    before = digest(path)
    one_line_error(
        study_cli("run", study_file, f"sqlite:///{path}"), f"sqlite:///{path}", "is a damaged SQLite database", "restore it"
    )
    assert digest(path) == before


def test_a_database_locked_beyond_the_lock_timeout_is_one_line(study_file, tmp_path):
    path = tmp_path / "studies.db"
    optuna.create_study(study_name="faults", storage=f"sqlite:///{path}")
    before = digest(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a long write of another process holds it
    try:
        for action in ("run", "status"):
            result = study_cli(action, study_file, f"sqlite:///{path}", "--lock-timeout", "1")
            one_line_error(result, f"sqlite:///{path}", "stayed locked by another process for over 1 s", "--lock-timeout")
    finally:
        holder.close()
    assert digest(path) == before


def test_reading_a_missing_file_creates_neither_the_file_nor_its_folder(study_file, tmp_path):
    for path in (tmp_path / "studies.db", tmp_path / "no_such_folder" / "studies.db"):
        one_line_error(
            study_cli("status", study_file, f"sqlite:///{path}"), f"sqlite:///{path}", f"no such file {path}", "study.py run"
        )
        assert not path.exists()
    assert not (tmp_path / "no_such_folder").exists()


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        (
            f"mongodb://genlab:{SECRET}@db-host/genlab",
            "mongodb://genlab:***@db-host/genlab",
            "SQLAlchemy knows no database 'mongodb'",
        ),
        ("sqlite:/relative-missing-slashes", "sqlite:/relative-missing-slashes", "not a database URL"),
        ("foo", "--storage foo:", "not a database URL"),
        ("sqlite://", "sqlite://", "a database in memory keeps nothing"),
    ],
)
def test_a_storage_url_of_an_unknown_form_names_the_accepted_forms(study_file, url, shown, why):
    one_line_error(
        study_cli("run", study_file, url),
        shown,
        why,
        "sqlite:///PATH",
        "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
    )


# ---------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def server(postgres_server: str) -> str:
    """The throwaway PostgreSQL server (trust for its superuser) with a user ``keyholder`` who needs SECRET."""
    url = postgres_server
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE keyholder LOGIN PASSWORD '{SECRET}'")
        hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
        hba.write_text(f"host all keyholder 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")  # first match wins
        admin.execute("SELECT pg_reload_conf()")
    wrong = url.replace("+psycopg", "").replace("genlab@", "keyholder:wrong@")
    for _ in range(100):  # until the server has read the rule (a wrong password passes before)
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.1)
    return url


def tables_and_databases(url: str) -> tuple[set[str], set[str]]:
    """The tables of the database behind ``url`` and the server's databases: what a fault must leave alone."""
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
        tables = {row[0] for row in admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        databases = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
    return tables, databases


def test_an_unreachable_server_is_one_line_naming_host_and_port(study_file):
    port = free_port()  # nobody listens: a server that is down, or a wrong port
    url = f"postgresql+psycopg://genlab:{SECRET}@127.0.0.1:{port}/genlab"
    for action in ("run", "status"):
        one_line_error(
            study_cli(action, study_file, url),
            f"postgresql+psycopg://genlab:***@127.0.0.1:{port}/genlab",
            f"no PostgreSQL server answers at 127.0.0.1:{port}",
            "start the server",
        )


def test_a_wrong_password_an_unknown_user_or_database_are_one_line_and_write_nothing(study_file, server):
    url = fresh_database(server, "faults_auth")
    before = tables_and_databases(url)
    host = url.split("@", 1)[1].rsplit("/", 1)[0]
    cases = [
        (f"keyholder:{SECRET}x@{host}/faults_auth", "keyholder:***@", "the server refused the password of keyholder"),
        (f"nobody@{host}/faults_auth", "nobody@", "the server has no user nobody"),
        (f"genlab@{host}/no_such_db", "/no_such_db", "the server has no database no_such_db: check its name, or create it"),
    ]
    for tail, shown, why in cases:
        one_line_error(study_cli("run", study_file, f"postgresql+psycopg://{tail}"), shown, why)
    assert tables_and_databases(url) == before  # no tables, and no database no_such_db


def test_reading_an_empty_database_creates_no_tables(study_file, server):
    url = fresh_database(server, "faults_empty")
    one_line_error(study_cli("status", study_file, url), url, "it holds no studies (no Optuna tables)")
    assert tables_and_databases(url)[0] == set()


# ---------------------------------------------------------------------------------------------- the study file


def test_a_study_file_changed_since_its_study_began_is_refused_naming_the_change(study_file, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    assert study_cli("run", study_file, storage).returncode == 0
    assert study_cli("run", study_file, storage).returncode == 0  # the same file: a resume, nothing to do
    spec = yaml.safe_load(study_file.read_text())
    study_file.write_text(yaml.safe_dump({**spec, "metrics": ["score", "seed", "wall_seconds"]}))
    assert study_cli("table", study_file, storage).returncode == 0  # a new column changes no trial
    before = digest(tmp_path / "studies.db")
    study_file.write_text(yaml.safe_dump({**spec, "seeds": [0, 1, 2], "train_args": ["--x", "0.5"]}))
    for action in ("run", "table"):
        last = one_line_error(
            study_cli(action, study_file, storage), storage, f"{study_file} changed since the study 'faults' began"
        )
        assert 'seeds: [0, 1] → [0, 1, 2]; train_args: [] → ["--x", "0.5"]' in last, last
        assert "restore the file" in last and "copy it under a new name to start a new study" in last, last
    assert digest(tmp_path / "studies.db") == before


#: A study file's faults (a change to the fixture's file, or its whole text) and what the line says: the first four
#: as the tester met them (a subprocess each), the others checked in this process (Study.load), which is quicker.
BAD_STUDY_FILES = [
    ({"seeds": 0}, "seeds: got 0; expected a non-empty list of distinct integers, e.g. [0, 1, 2]."),
    (
        {"grid": {"model.init_args.lr_g": 0.001}},
        "grid.model.init_args.lr_g: got 0.001; expected a non-empty list of distinct values",
    ),
    (
        {"configs": "configs/wgan_ring8_spectral_norm.yaml"},
        'configs: got "configs/wgan_ring8_spectral_norm.yaml"; expected a non-empty list of distinct config files',
    ),
    ("configs: [a.yaml]\nseeds: [0, 1\n", "not valid YAML (line 3, column 1: expected ',' or ']', but got '<stream end>')"),
    ({"seeds": [0, 0]}, "seeds: got [0, 0]; expected a non-empty list of distinct integers"),
    (
        {"train_args": ["--trainer.max_steps", 40]},
        'train_args: got ["--trainer.max_steps", 40]; expected a list of train.py arguments, numbers quoted',
    ),
    ({"metrics": []}, "metrics: got []; expected a non-empty list of final_metrics.json keys"),
    ({"objective": "score"}, 'objective: got "score"; expected {value: EXPRESSION, direction: maximize or minimize}'),
    ({"search": {"space": {"x": "uniform 0..1"}, "trials": 0}}, "search.trials: got 0; expected an integer >= 1"),
    ({"search": {"space": {"x": "uniform 0..1"}}}, "search.trials is missing; expected an integer >= 1"),
    (
        {"search": {"space": {"x": "uniform 0..1"}, "trials": 2, "pruner": "median"}},
        'search.pruner: got "median"; expected {class_path: ',
    ),
    ("- configs/a.yaml\n", 'got ["configs/a.yaml"]; expected a mapping of study keys (name, configs, seeds,'),
]


def test_a_study_file_with_a_bad_value_or_bad_yaml_is_one_line_and_begins_no_study(study_file, tmp_path):
    """Checked before the database is opened: a study begun from the bad file would refuse the file corrected."""
    from core.errors import StudyError
    from studies.study_file import Study

    spec = yaml.safe_load(study_file.read_text())
    for number, (change, why) in enumerate(BAD_STUDY_FILES):
        study_file.write_text(change if isinstance(change, str) else yaml.safe_dump({**spec, **change}))
        if number < 4:
            one_line_error(study_cli("run", study_file, f"sqlite:///{tmp_path / 'studies.db'}"), f"{study_file}: ", why)
            assert not (tmp_path / "studies.db").exists() and not (tmp_path / "out").exists()
        else:
            with pytest.raises(StudyError) as error:
                Study.load(study_file)
            assert str(error.value).startswith(f"{study_file}: ") and why in str(error.value), error.value


#: An option out of range and what the line says: the first as the tester met it (a subprocess), the others in this
#: process (study.main), where argparse refuses them just the same.
BAD_OPTIONS = [
    (["--workers", "0"], "argument --workers: '0' is not an integer >= 1"),
    (["--heartbeat", "0"], "argument --heartbeat: '0' is not an integer >= 1"),
    (["--grace", "30"], "--grace 30 must be longer than --heartbeat 60"),
    (["--threads", "-1"], "argument --threads: '-1' is not an integer >= 1"),
    (["--lock-timeout", "nan"], "argument --lock-timeout: 'nan' is not a number >= 0"),
    (["--gpus", "0", "-1"], "argument --gpus: '-1' is not an integer >= 0"),
]


def test_a_numeric_option_out_of_range_is_refused_at_parse_time(study_file, tmp_path, capsys):
    from study import main

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    one_line_error(study_cli("run", study_file, storage, *BAD_OPTIONS[0][0]), BAD_OPTIONS[0][1], "python study.py --help")
    for option, why in BAD_OPTIONS[1:]:
        with pytest.raises(SystemExit) as exit_:
            main(["run", str(study_file), "--storage", storage, *option])
        one_line_error(
            subprocess.CompletedProcess(option, exit_.value.code, "", capsys.readouterr().err), why, "python study.py --help"
        )
    assert not (tmp_path / "studies.db").exists()


def test_a_folder_holds_one_studys_runs_and_a_copy_of_the_study_is_refused_there(study_file, tmp_path):
    """A copy under a new name with the same ``out:`` (and longer runs) would take the first study's runs for its own."""
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    assert study_cli("run", study_file, storage).returncode == 0
    assert json.loads((tmp_path / "out" / "owner.json").read_text()) == {"study": "faults", "storage": storage}
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump({**yaml.safe_load(study_file.read_text()), "train_args": ["--x", "0.5"]}))
    before, folder = digest(tmp_path / "studies.db"), snapshot(tmp_path / "out")
    for action in ("run", "table"):
        last = one_line_error(
            study_cli(action, copy, storage), f"{copy}: out: {tmp_path / 'out'} holds the runs of the study 'faults' in {storage}"
        )
        assert f"not of 'copy' in {storage}: give {copy} an out: of its own." in last, last
    assert digest(tmp_path / "studies.db") == before and snapshot(tmp_path / "out") == folder
    from core.errors import StudyError
    from studies.storage import check_owner
    from studies.study_file import Study

    other = f"sqlite:///{tmp_path / 'other.db'}"  # the same study file, another database: another study
    with pytest.raises(
        StudyError,
        match=(
            f"not of 'faults' in {other}: give {study_file} an out: of its own, "
            f"or, if it is that study, run it with --storage {storage}"
        ),
    ):
        check_owner(Study.load(study_file), other)


def test_an_out_folder_that_cannot_be_written_is_one_line_before_any_trial(study_file, tmp_path, locked_folder):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    spec = yaml.safe_load(study_file.read_text())
    study_file.write_text(yaml.safe_dump({**spec, "out": str(locked_folder / "out")}))
    one_line_error(
        study_cli("run", study_file, storage),
        f"out: {locked_folder / 'out'} cannot be written",
        "point out: at a folder this user may write",
    )
    assert not (tmp_path / "studies.db").exists()  # no study begun, no trial left running
    optuna.create_study(study_name="faults", storage=storage)
    before = digest(tmp_path / "studies.db")
    study_file.write_text(yaml.safe_dump({**spec, "out": str(locked_folder)}))
    one_line_error(study_cli("table", study_file, storage), f"out: {locked_folder} cannot be written", "point out: at a folder")
    assert digest(tmp_path / "studies.db") == before and not any(locked_folder.iterdir())


def test_the_table_of_a_study_never_run_suggests_a_command_that_works_as_printed(study_file, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="another", storage=storage)
    before = digest(tmp_path / "studies.db")
    last = one_line_error(study_cli("table", study_file, storage), f"no study 'faults' in {storage}: start it with `")
    assert digest(tmp_path / "studies.db") == before
    command = last.split("`")[1].split()
    assert command == ["python", "study.py", "run", str(study_file), "--storage", storage], last
    assert subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, timeout=60, check=False).returncode == 0


#: A train.py whose Ctrl-C takes a second (as train.py finishes its batch and writes last.ckpt); started again, the
#: stand-in, which completes.
SLOW_TO_STOP = """
import runpy, signal, sys, time
from pathlib import Path

started = Path(__file__).with_suffix(".started")
if started.exists():
    runpy.run_path("tests/stand_in_train.py", run_name="__main__")
    sys.exit()
signal.signal(signal.SIGINT, lambda *_: (time.sleep(1.0), sys.exit(1)))
started.touch()
time.sleep(60)
"""


def test_a_worker_ctrl_c_d_twice_still_puts_its_trial_back_in_the_queue(study_file, tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    (tmp_path / "slow_to_stop.py").write_text(SLOW_TO_STOP)
    study_file.write_text(
        yaml.safe_dump({**yaml.safe_load(study_file.read_text()), "seeds": [0], "command": [str(tmp_path / "slow_to_stop.py")]})
    )
    command = [sys.executable, str(ROOT / "study.py"), "run", str(study_file), "--storage", storage]
    worker = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "slow_to_stop.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)  # while its run is still stopping
    output, errors = worker.communicate(timeout=60)
    assert worker.returncode == 130, errors
    assert "a seed 0: interrupted; the trial is back in the queue" in output, output
    assert "SIGINT again: still stopping the run" in errors and "Traceback" not in errors and "study: stopped" not in errors, (
        errors
    )
    study = optuna.load_study(study_name="faults", storage=storage)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study_cli("run", study_file, storage).returncode == 0  # at once: nothing left running under the stopped worker
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
