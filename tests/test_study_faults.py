"""The study database's failures as a user meets them (``study.py run|table|status STUDY --storage URL`` in a
subprocess): each ends in one last line ``study: error: ...`` naming the URL, its password masked, and the likely
fix; exit code 2, no traceback, and the file or database as it was. On SQLite files and on a throwaway PostgreSQL
server (benchmarks/study_storage.py's); and a study file changed since its study began."""

from __future__ import annotations

import hashlib
import os
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

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
SECRET = "s3cret-pw"


# ---------------------------------------------------------------------------------------------- helpers


def study_cli(action: str, study: Path, storage: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "study.py"), action, str(study), "--storage", storage, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def one_line_error(result: subprocess.CompletedProcess, shown_url: str, *fix: str) -> str:
    """The checks every fault shares; returns the line for the fault's own checks."""
    last = (result.stderr.strip().splitlines() or [""])[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith("study: error: ") and shown_url in last, result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout, result.stderr
    assert all(words in last for words in fix), last
    return last


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """A study of two stand-in runs (tests/stand_in_train.py: a tenth of a second each)."""
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"score": 10}))
    spec = {"configs": [str(tmp_path / "a.yaml")], "seeds": [0, 1], "metrics": ["score", "seed"], "out": str(tmp_path / "out"), "command": ["tests/stand_in_train.py"]}
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        one_line_error(study_cli(action, study_file, f"sqlite:///{path}"), f"sqlite:///{path}", "is not an SQLite database", "restore it")
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
    one_line_error(study_cli("run", study_file, f"sqlite:///{path}"), f"sqlite:///{path}", "is a damaged SQLite database", "restore it")
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
        one_line_error(study_cli("status", study_file, f"sqlite:///{path}"), f"sqlite:///{path}", f"no such file {path}", "study.py run")
        assert not path.exists()
    assert not (tmp_path / "no_such_folder").exists()


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        (f"mongodb://genlab:{SECRET}@db-host/genlab", "mongodb://genlab:***@db-host/genlab", "SQLAlchemy knows no database 'mongodb'"),
        ("sqlite:/relative-missing-slashes", "sqlite:/relative-missing-slashes", "not a database URL"),
        ("foo", "--storage foo:", "not a database URL"),
        ("sqlite://", "sqlite://", "a database in memory keeps nothing"),
    ],
)
def test_a_storage_url_of_an_unknown_form_names_the_accepted_forms(study_file, url, shown, why):
    one_line_error(study_cli("run", study_file, url), shown, why, "sqlite:///PATH", "postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE")


# ---------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def server():
    """A throwaway PostgreSQL server (trust for its superuser) and a user ``keyholder`` who needs SECRET."""
    try:
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        bindir = None
    if bindir is None or not (bindir / "initdb").exists():
        message = "no PostgreSQL server binaries here (pg_config --bindir has no initdb); install postgresql to run this test"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    from benchmarks.study_storage import throwaway_postgres

    with throwaway_postgres() as url:
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
        yield url


def fresh_database(server: str, name: str) -> str:
    with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


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
        one_line_error(study_cli(action, study_file, url), f"postgresql+psycopg://genlab:***@127.0.0.1:{port}/genlab", f"no PostgreSQL server answers at 127.0.0.1:{port}", "start the server")


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
        last = one_line_error(study_cli(action, study_file, storage), storage, f"{study_file} changed since the study 'faults' began")
        assert "seeds: [0, 1] → [0, 1, 2]; train_args: [] → [\"--x\", \"0.5\"]" in last, last
        assert "restore the file" in last and "copy it under a new name to start a new study" in last, last
    assert digest(tmp_path / "studies.db") == before
