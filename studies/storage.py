"""The study database and the study's folder: ``--storage`` parsed and opened (only ``run`` creates anything),
each database error translated into one line naming the fix (:func:`database_errors`, the one translator), the
definition a study's database records checked against its file, Optuna's sampler and pruner, and the owner of
the study's folder (``owner.json``): a folder holds one study's runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from core.errors import StudyError
from studies.study_file import ROOT, Study, instantiate

DEFAULT_STORAGE = f"sqlite:///{ROOT / 'runs' / 'studies.db'}"
#: Seconds a worker waits for a SQLite database's lock (``--lock-timeout``): 8 workers on one file queue for it.
LOCK_TIMEOUT = 60.0
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and their retry callback are "experimental" in Optuna since 2.8 (2021); genlab relies on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Study.ask warns that heartbeats belong to Study.optimize; the workers record them themselves (queue.Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")

STORAGE_FORMS = (
    "sqlite:///PATH (relative to here), sqlite:////ABSOLUTE/PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)

#: A database error's driver message (a pattern) -> what it means for the study, and the likely fix. SQLite's and
#: libpq's messages are the only thing that tells these apart: psycopg has no SQLSTATE for a failed connection.
STORAGE_FAULTS = [
    (r"file is not a database", "{database} is not an SQLite database: restore it from a backup, or point --storage elsewhere"),
    (r"malformed", "{database} is a damaged SQLite database: restore it from a backup, or point --storage elsewhere"),
    (
        r"database is locked",
        "{database} stayed locked by another process for over {lock_timeout:g} s: wait for it to finish, or raise --lock-timeout",
    ),
    (r"unable to open database file", "cannot open {database}: check that its folder exists and that this user may write there"),
    (r"readonly database", "{database} is read-only for this user: check its permissions"),
    (r"disk is full|disk I/O error", "cannot write {database}: its disk is full or failing"),
    (
        r"no such table|relation \"\w+\" does not exist",
        "it holds no studies (no Optuna tables): check --storage, or start the study with `python study.py run STUDY`",
    ),
    (r"Connection refused", "no PostgreSQL server answers at {host}:{port}: start the server, or check the host and port"),
    (r"resolve host|translate host name", "unknown host {host}: check the host"),
    (r"timeout expired|timed out", "{host}:{port} does not answer: check the host, the port and any firewall between"),
    (
        r"password authentication failed",
        "the server refused the password of {user}: check the password (in the URL or ~/.pgpass)",
    ),
    (r"no password supplied", "the server wants a password for {user}: give it in the URL (USER:PASSWORD@HOST) or in ~/.pgpass"),
    (
        r"role \"[^\"]*\" does not exist",
        "the server has no user {user}: check the user name, or create the user (createuser {user})",
    ),
    (
        r"database \"[^\"]*\" does not exist",
        "the server has no database {database}: check its name, or create it (createdb -O {user} {database})",
    ),
    (
        r"no pg_hba.conf entry",
        "the server does not let {user} into {database} from here (its pg_hba.conf): ask its administrator",
    ),
    (
        r"permission denied",
        "{user} may not use the study's tables in {database}: grant it the rights, or use the database's owner",
    ),
    (
        r"too many clients|remaining connection slots",
        "the server at {host}:{port} takes no more connections: stop some workers, or raise its max_connections",
    ),
    (
        r"server closed the connection|terminating connection|consuming input failed|starting up|shutting down",
        "the server at {host}:{port} went away: start it again, then run again (what is done is kept)",
    ),
]
#: What using the database raises: SQLAlchemy's errors wrap the driver's; Optuna wraps SQLAlchemy's as StorageInternalError.
DATABASE_ERRORS = (sqlalchemy.exc.DBAPIError, optuna.exceptions.StorageInternalError)


def masked(url: str) -> str:
    """The URL as messages show it: a password (``USER:PASSWORD@``, ``?password=``) as ``***``."""
    return re.sub(r"(password=)[^&]*", r"\1***", re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url))


def storage_fault(url: str, message: str, lock_timeout: float) -> StudyError:
    """The one line of a database error: the URL, what failed (from the driver's ``message``), the likely fix."""
    parsed = sqlalchemy.engine.make_url(url)  # parseable: connect() checked it
    user = parsed.username or os.environ.get("PGUSER") or os.environ.get("USER") or "USER"  # libpq's default: the login name
    place = {"database": parsed.database, "host": parsed.host or "localhost", "port": parsed.port or 5432, "user": user}
    matches = [text.format(**place, lock_timeout=lock_timeout) for pattern, text in STORAGE_FAULTS if re.search(pattern, message)]
    advice = (matches or [f"the database failed: {(message.strip().splitlines() or ['no message'])[0]}"])[0]
    return StudyError(f"--storage {masked(url)}: {advice}.")


@contextlib.contextmanager
def database_errors(url: str, lock_timeout: float) -> Iterator[None]:
    """Around a command, which opens and uses the study database: its errors as one line each (storage_fault)."""
    try:
        yield
    except DATABASE_ERRORS as error:
        while not isinstance(error, sqlalchemy.exc.DBAPIError) and error.__cause__ is not None:
            error = error.__cause__
        raise storage_fault(url, str(getattr(error, "orig", error)), lock_timeout) from None


def storage_url(url: str) -> sqlalchemy.engine.URL:
    """``--storage`` parsed, or why it cannot be used, naming the forms it can take."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StudyError(f"--storage {masked(url)}: not a database URL; give {STORAGE_FORMS}.") from None
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StudyError(
            f"--storage {masked(url)}: SQLAlchemy knows no database {parsed.drivername!r}; give {STORAGE_FORMS}."
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError:
        raise StudyError(
            f"--storage {masked(url)}: its driver ({dialect.driver}) is not installed; give {STORAGE_FORMS}."
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StudyError(f"--storage {masked(url)}: a database in memory keeps nothing; give {STORAGE_FORMS}.")
    return parsed


def check_sqlite_file(path: Path, url: str, lock_timeout: float) -> None:
    """Read an existing SQLite file through, read-only, before it is used: a file that is not a database, or a
    damaged one (Optuna would write over a damaged page), is refused and stays byte for byte as it was."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    engine = sqlalchemy.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=lock_timeout))
    try:
        with engine.connect() as connection:
            problems = connection.exec_driver_sql("PRAGMA quick_check").scalars().all()
    finally:
        engine.dispose()
    if problems != ["ok"]:
        raise storage_fault(url, "database disk image is malformed", lock_timeout)


def connect(url: str, lock_timeout: float, writing: bool, **options: Any) -> RDBStorage:
    """The study database. Only a writer (``run``) creates anything: the SQLite file (and its folder),
    Optuna's tables; ``table`` and ``status`` leave a missing file missing and an empty database empty."""
    parsed = storage_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite:
        path = Path(parsed.database)
        if path.exists():
            check_sqlite_file(path, url, lock_timeout)
        elif not writing:
            start = "start the study with `python study.py run STUDY`"
            raise StudyError(f"--storage {masked(url)}: no such file {path}: check the path, or {start}.")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StudyError(f"--storage {masked(url)}: cannot create the folder {path.parent} ({error.strerror}).") from None
    # SQLite ignores Optuna's SELECT ... FOR UPDATE, so two workers could both take one waiting trial: there every
    # transaction begins with BEGIN IMMEDIATE (the database's write lock) instead, and the driver's own BEGIN is off.
    engine = {"connect_args": {"timeout": lock_timeout, "isolation_level": None}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            storage = RDBStorage(url, engine_kwargs=engine, skip_table_creation=not writing, **options)
            break
        except sqlalchemy.exc.DBAPIError as error:
            # Workers that start together on a new database race to create its tables: the loser's CREATE meets the
            # winner's table (or row). Anything else is a fault of the database, for database_errors to tell.
            racing = isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in str(error.orig)
            if attempt == 2 or not racing:
                raise
            time.sleep(1.0 + attempt)
    if sqlite and writing:
        sqlalchemy.event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    return storage


#: The keys of a study file that say what its trials are (``objective``: resolved, the first metric by default).
#: The others (name, metrics, figure, curves, out) say how they are shown and where they are kept, and may change.
DEFINITION_KEYS = ("configs", "seeds", "grid", "train_args", "command", "objective", "search")


def definition_of(study: Study) -> dict[str, Any]:
    """What the study's trials are, as the database records it (study user attribute ``definition``, JSON)."""
    spec = asdict(study)
    return json.loads(json.dumps({key: spec[key] for key in DEFINITION_KEYS}, default=str))


def flattened(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"search": {"trials": 8}, "grid": {}}`` -> ``{"search.trials": 8}``: each key of a definition that can differ."""
    if isinstance(value, dict) or value is None:
        return {key: item for name, inner in (value or {}).items() for key, item in flattened(inner, f"{prefix}{name}.").items()}
    return {prefix.removesuffix("."): value}


def check_definition(study: Study, optuna_study: optuna.Study, url: str) -> None:
    """A study is what its file said when it began: a changed file would mix two studies in one table (and Optuna
    refuses a parameter whose choices changed), so it is refused, naming each change, before anything is written."""
    recorded = optuna_study.user_attrs.get("definition")
    if recorded is None or recorded == definition_of(study):  # None: begun before genlab recorded definitions
        return
    before, after = ({key: json.dumps(value) for key, value in flattened(d).items()} for d in (recorded, definition_of(study)))
    differing = [key for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]
    changes = "; ".join(f"{key}: {before.get(key, 'absent')} → {after.get(key, 'absent')}" for key in differing)
    raise StudyError(
        f"{study.file or 'the study file'} changed since the study {study.name!r} began in {masked(url)} ({changes}): "
        "restore the file (the database has the study as it began), or copy it under a new name to start a new study."
    )


def sampler_of(study: Study) -> optuna.samplers.BaseSampler:
    # A grid's trials are all enqueued; the sampler only ever fills in their fixed values.
    return (
        instantiate(study.search.sampler, optuna.samplers.TPESampler()) if study.search else optuna.samplers.RandomSampler(seed=0)
    )


def pruner_of(study: Study) -> optuna.pruners.BasePruner:
    return instantiate(study.search.pruner, optuna.pruners.NopPruner()) if study.search else optuna.pruners.NopPruner()


#: The file in a study's folder naming the study whose runs it holds (written by its first trial; see check_owner).
OWNER_FILE = "owner.json"


def owner_of(study: Study, url: str) -> dict[str, str]:
    """What ``OWNER_FILE`` records: the study's name and database (an SQLite file by its absolute path, a password masked)."""
    parsed = storage_url(url)
    if parsed.get_backend_name() == "sqlite":
        url = f"sqlite:///{Path(parsed.database).resolve()}"
    return {"study": study.name, "storage": masked(url)}


def check_owner(study: Study, url: str) -> None:
    """Before ``run`` or ``table`` uses the study's folder: it holds no other study's runs, whose ``final_metrics.json``
    a trial would take for its own, and whose table a table would replace. A folder of a study begun before genlab
    recorded owners becomes its first trial's (claim_folder)."""
    marker, mine = study.folder / OWNER_FILE, owner_of(study, url)
    try:
        owner = dict(json.loads(marker.read_text())) if marker.exists() else mine
    except (OSError, ValueError, TypeError):
        raise StudyError(
            f"{study.file}: out: cannot read {marker}: remove it if {study.folder} holds only this study's runs."
        ) from None
    if owner != mine:
        same_name = (
            f", or, if it is that study, run it with --storage {owner.get('storage')}" if owner.get("study") == study.name else ""
        )
        raise StudyError(
            f"{study.file}: out: {study.folder} holds the runs of the study {owner.get('study')!r} "
            f"in {owner.get('storage')} (its {OWNER_FILE}), "
            f"not of {study.name!r} in {mine['storage']}: give {study.file} an out: of its own{same_name}."
        )


def check_writable(study: Study) -> None:
    """Before ``run`` or ``table`` writes in the study's folder (else every trial would fail, or the table): create it,
    and a file in it."""
    try:
        study.folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=study.folder).close()
    except OSError as error:
        raise StudyError(
            f"{study.file}: out: {study.folder} cannot be written ({error.strerror}): point out: at a folder this user may write."
        ) from None


def claim_folder(study: Study, url: str) -> None:
    """Record the study as its folder's owner (check_owner), once: written whole, so no reader meets half a file."""
    marker = study.folder / OWNER_FILE
    if not marker.exists():
        partial = marker.with_name(f"{OWNER_FILE}.{os.getpid()}")
        partial.write_text(json.dumps(owner_of(study, url)) + "\n")
        partial.replace(marker)
