"""genlab's studies: every comparison is an Optuna study in a database, run by any number of workers.

    python study.py run configs/studies/wgan_ring8.yaml                 # a worker: runs trials until none waits
    python study.py run wgan_ring8 --workers 2                          # two workers on this machine's CPU
    python study.py run configs/studies/wgan_ring8.yaml --gpus 0 1 2 3  # four workers, one per GPU
    python study.py run STUDY --storage postgresql://genlab@db-host/genlab   # from every machine of the study
    python study.py table configs/studies/wgan_ring8.yaml               # table.md, side_by_side.png, curves.png
    python study.py status configs/studies/wgan_ring8.yaml              # what is done, running, waiting, failed

A study file (``configs/studies/*.yaml``) names experiment configs, seeds and, optionally, values of
config keys (``grid: {model.init_args.code_size: [2, 8, 32]}``): a *grid*, each point one trial,
enqueued once when the study is created. With a ``search:`` section it
is a *search* instead: each trial samples the config keys of its space (Optuna sampler and pruner,
a trial budget) and the objective is read from the run's ``final_metrics.json``.

A trial is one ``python train.py fit --config CONFIG --seed_everything SEED`` process, logging to
``OUT/<config>/seed_<seed>/`` (a search's trials: ``OUT/<config>/<params hash>/seed_<seed>/``): its
CSV metrics, checkpoints, figures and an offline W&B run grouped by study; its console output goes
to ``seed_<seed>.log`` beside the folder. Its metrics go on
the trial (user attribute ``metrics``), so the table and the dashboard read the database, not the
folders. The database is any SQLAlchemy URL (default: ``sqlite:///runs/studies.db``, nothing to
start); ``optuna-dashboard sqlite:///runs/studies.db`` shows it live.

Faults: a worker records a heartbeat for its trial; a trial whose worker died (SIGKILL, a lost
machine) is failed after ``--grace`` seconds without one and re-queued by the next worker that looks.
A run that fails is recorded as failed with its one-line reason and the study goes on; Ctrl-C
(once or more) stops the run (it saves ``last.ckpt``) and re-queues its trial, which resumes from
there. A run folder that already holds ``final_metrics.json`` is recorded without training again;
a study's folder holds one study's runs (``owner.json``). The exit code is 0 only if every trial the
worker ran completed (or was pruned). A database that cannot be used (unreachable, damaged, locked
too long, a bad URL), a study file that is not valid (YAML, each key's type) or changed since its
study began, an option out of range, an ``out:`` that cannot be written or holds another study's
runs: each stops the command with one line, ``study: error: ...``, and exit code 2, before anything
is written.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import ctypes
import hashlib
import importlib
import itertools
import json
import math
import operator
import os
import re
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent
DEFAULT_STORAGE = f"sqlite:///{ROOT / 'runs' / 'studies.db'}"
#: What a run on one of ``--gpus`` adds to its command line (before the study's own train arguments).
GPU_ARGS = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]
#: What ``callbacks.optuna_pruning.OptunaPruning`` leaves in the run folder when it stops a run; the trial is then recorded as pruned.
PRUNED_FILE = "pruned.json"
#: Seconds a worker waits for a SQLite database's lock (``--lock-timeout``): 8 workers on one file queue for it.
LOCK_TIMEOUT = 60.0
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and their retry callback are "experimental" in Optuna since 2.8 (2021); genlab relies on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Study.ask warns that heartbeats belong to Study.optimize; the workers record them themselves (Heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


class StudyError(Exception):
    """A study file or a command line the user can fix: printed as one line."""


# ---------------------------------------------------------------------------------------------- study files


@dataclass
class Objective:
    """What a trial is worth: an arithmetic expression over the keys of ``final_metrics.json``
    (``high_quality * modes / 8``), maximised or minimised."""

    value: str
    direction: str = "maximize"

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise StudyError(f"objective.direction must be maximize or minimize, got {self.direction!r}.")
        try:
            self.expression = ast.parse(str(self.value), mode="eval").body
        except SyntaxError:
            raise StudyError(f"objective: {self.value!r} is not an expression.") from None
        for node in ast.walk(self.expression):
            called = getattr(node, "func", None)
            if (
                not isinstance(node, ALLOWED_NODES)
                or (isinstance(node, ast.Call) and getattr(called, "id", None) not in FUNCTIONS)
                or (isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)))
            ):
                raise StudyError(f"objective: {ast.unparse(node)!r} is not allowed (numbers, metric names, + - * /, min, max, log).")

    def names(self) -> set[str]:
        return {node.id for node in ast.walk(self.expression) if isinstance(node, ast.Name)} - set(FUNCTIONS)

    def __call__(self, metrics: dict[str, float]) -> float:
        missing = self.names() - set(metrics)
        if missing:
            raise KeyError(f"the objective needs {', '.join(sorted(missing))}, which the run did not report")
        return float(evaluate(self.expression, metrics))


OPERATORS: dict[type, Callable] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.USub: operator.neg}
FUNCTIONS: dict[str, Callable] = {"min": min, "max": max, "log": math.log}
ALLOWED_NODES = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.Call, ast.Load, *OPERATORS)


def evaluate(node: ast.AST, names: dict[str, float]) -> float:
    """Numbers, metric names, + - * /, min, max, log (checked when the objective is read)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp):
        return OPERATORS[type(node.op)](evaluate(node.left, names), evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp):
        return OPERATORS[type(node.op)](evaluate(node.operand, names))
    return FUNCTIONS[node.func.id](*(evaluate(arg, names) for arg in node.args))


SPACE_FORMS = {
    r"log-uniform (\S+)\.\.(\S+)": lambda low, high: FloatDistribution(float(low), float(high), log=True),
    r"uniform (\S+)\.\.(\S+)": lambda low, high: FloatDistribution(float(low), float(high)),
    r"int (\S+)\.\.(\S+)": lambda low, high: IntDistribution(int(low), int(high)),
    r"log-int (\S+)\.\.(\S+)": lambda low, high: IntDistribution(int(low), int(high), log=True),
    r"choice (.+)": lambda choices: CategoricalDistribution([yaml.safe_load(c.strip()) for c in choices.split(",")]),
}


def distribution(key: str, text: str) -> optuna.distributions.BaseDistribution:
    """``log-uniform 1e-5..1e-3``, ``uniform 0..1``, ``int 1..10``, ``log-int 1..64``, ``choice a, b, c``."""
    for pattern, make in SPACE_FORMS.items():
        if match := re.fullmatch(pattern, str(text).strip()):
            try:
                return make(*match.groups())
            except ValueError as error:
                raise StudyError(f"search.space.{key}: {text!r}: {error}.") from None
    raise StudyError(f"search.space.{key}: {text!r} is not one of: log-uniform A..B, uniform A..B, int A..B, log-int A..B, choice X, Y, Z.")


def instantiate(spec: dict | None, default: Any) -> Any:
    """An Optuna sampler or pruner from ``{class_path: optuna.samplers.TPESampler, init_args: {...}}``."""
    if spec is None:
        return default
    module, _, name = spec["class_path"].rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise StudyError(f"{spec['class_path']}: {error}.") from None


@dataclass
class Search:
    """A search over config keys: ``space`` maps a train.py key to a distribution; ``trials`` is the
    budget (trials not failed); ``report`` is the metric prefix the pruner watches during a run
    (``eval/``: the run's periodic evaluation logs ``eval/<name>``)."""

    space: dict[str, str]
    trials: int
    sampler: dict | None = None
    pruner: dict | None = None
    report: str = "eval/"

    def __post_init__(self) -> None:
        self.distributions = {key: distribution(key, text) for key, text in self.space.items()}


@dataclass
class Study:
    """A study file: see the module docstring and ``configs/studies/``."""

    name: str
    configs: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid: dict[str, list] = field(default_factory=dict)
    train_args: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["wall_seconds"])
    figure: list[str] = field(default_factory=list)
    curves: list[str] = field(default_factory=list)
    objective: Objective | None = None
    search: Search | None = None
    out: str | None = None
    command: list[str] = field(default_factory=lambda: ["train.py", "fit"])
    file: Path | None = field(default=None, init=False, repr=False)  # where it was read from (Study.load)

    @classmethod
    def load(cls, path: Path) -> Study:
        if not path.is_file():
            raise StudyError(f"no such study file: {path} (the studies are in configs/studies/).")
        try:
            spec = yaml.safe_load(path.read_bytes())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise StudyError(f"{path}: not valid YAML ({where}{getattr(error, 'problem', None) or str(error).splitlines()[0]}): correct it there.") from None
        spec = {} if spec is None else spec
        check_section(path, "", spec, STUDY_KEYS, required=("configs",))
        for key, values in (spec.get("grid") or {}).items():
            check_value(path, f"grid.{key}", values, *GRID_VALUES)
        for section, schema, required in (("objective", OBJECTIVE_KEYS, ("value",)), ("search", SEARCH_KEYS, ("space", "trials"))):
            if spec.get(section) is not None:
                check_section(path, f"{section}.", spec[section], schema, required)
        spec.setdefault("name", path.stem)
        if spec.get("objective") is not None:
            spec["objective"] = Objective(**spec["objective"])
        if spec.get("search") is not None:
            spec["search"] = Search(**spec["search"])
        study = cls(**spec)
        missing = [config for config in study.configs if not (ROOT / config).is_file()]
        if missing:
            raise StudyError(f"{path}: no such config: {', '.join(missing)}.")
        if study.objective is None:  # the dashboard plots each trial's value: the table's first metric
            study.objective = Objective(study.metrics[0].removesuffix(":%"))
        study.file = path
        return study

    @property
    def folder(self) -> Path:
        return ROOT / (self.out or f"runs/studies/{self.name}")

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """The table's rows: each config, times each combination of the ``grid`` keys' values."""
        combos = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        return [(label_of({"config": config, **combo}), {"config": config, **combo}) for config in self.configs for combo in combos]

    def points(self) -> list[dict[str, Any]]:
        """The grid: every variant and seed, in table order."""
        return [{**variant, "seed": seed} for _, variant in self.variants() for seed in self.seeds]

    def run_dir(self, params: dict[str, Any]) -> Path:
        """``OUT/<config>/seed_<s>``; with grid keys ``OUT/<config>/<key>_<value>/seed_<s>``; a search's
        trial ``OUT/<config>/<hash of its sampled values>/seed_<s>``."""
        config = Path(params["config"]).stem
        keys = {key: value for key, value in params.items() if key not in ("config", "seed")}
        if not keys:
            return self.folder / config / f"seed_{params['seed']}"
        if self.search is None:
            return self.folder / config / "-".join(f"{short_key(key)}_{value}" for key, value in keys.items()) / f"seed_{params['seed']}"
        digest = hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]
        return self.folder / config / digest / f"seed_{params['seed']}"


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
        raise StudyError(f"{study.file}: out: cannot read {marker}: remove it if {study.folder} holds only this study's runs.") from None
    if owner != mine:
        same_name = f", or, if it is that study, run it with --storage {owner.get('storage')}" if owner.get("study") == study.name else ""
        raise StudyError(
            f"{study.file}: out: {study.folder} holds the runs of the study {owner.get('study')!r} in {owner.get('storage')} (its {OWNER_FILE}), "
            f"not of {study.name!r} in {mine['storage']}: give {study.file} an out: of its own{same_name}."
        )


def check_writable(study: Study) -> None:
    """Before ``run`` or ``table`` writes in the study's folder (else every trial would fail, or the table): create it,
    and a file in it."""
    try:
        study.folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=study.folder).close()
    except OSError as error:
        raise StudyError(f"{study.file}: out: {study.folder} cannot be written ({error.strerror}): point out: at a folder this user may write.") from None


def claim_folder(study: Study, url: str) -> None:
    """Record the study as its folder's owner (check_owner), once: written whole, so no reader meets half a file."""
    marker = study.folder / OWNER_FILE
    if not marker.exists():
        partial = marker.with_name(f"{OWNER_FILE}.{os.getpid()}")
        partial.write_text(json.dumps(owner_of(study, url)) + "\n")
        partial.replace(marker)


def short_key(key: str) -> str:
    """``model.init_args.code_size`` -> ``code_size``: a config key as folder names and tables show it."""
    return key.rsplit(".", 1)[-1]


def label_of(params: dict[str, Any]) -> str:
    """``gan_mnist``, ``ae_mnist code_size=32``: a config's name and its keys' values (not the seed)."""
    keys = [f"{short_key(key)}={value:.3g}" if isinstance(value, float) else f"{short_key(key)}={value}" for key, value in params.items() if key not in ("config", "seed")]
    return " ".join([Path(str(params.get("config", "?"))).stem, *keys])


def is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def listing(item: Callable[[Any], bool], empty: bool = False, distinct: bool = False) -> Callable[[Any], bool]:
    """A list of items: not empty unless ``empty``; without repeats if ``distinct`` (a repeated seed or config would
    enqueue its points twice)."""
    return lambda value: (
        isinstance(value, list) and (empty or bool(value)) and all(map(item, value))
        and (not distinct or len({json.dumps(v, default=str) for v in value}) == len(value))
    )  # fmt: skip


def is_plugin(value: Any) -> bool:
    return isinstance(value, dict) and is_text(value.get("class_path")) and set(value) <= {"class_path", "init_args"} and isinstance(value.get("init_args", {}), dict)


#: What each key of a study file must hold, and how the error shows what is expected: checked before anything
#: uses the file, since the database records the study's definition as the file gives it.
STUDY_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (is_text, "a name, e.g. wgan_ring8"),
    "configs": (listing(is_text, distinct=True), "a non-empty list of distinct config files, e.g. [configs/wgan_ring8_spectral_norm.yaml]"),
    "seeds": (listing(is_int, distinct=True), "a non-empty list of distinct integers, e.g. [0, 1, 2]"),
    "grid": (lambda value: isinstance(value, dict) and all(map(is_text, value)), "config keys, each with a list of values, e.g. {model.init_args.code_size: [2, 8, 32]}"),
    "train_args": (listing(lambda value: isinstance(value, str), empty=True), 'a list of train.py arguments, numbers quoted, e.g. [--trainer.max_steps, "400"]'),
    "metrics": (listing(is_text), "a non-empty list of final_metrics.json keys, e.g. [modes, high_quality:%]"),
    "figure": (listing(is_text, empty=True), "a list of file patterns in a run folder, e.g. [landscape/iteration_*.png]"),
    "curves": (listing(is_text, empty=True), "a list of metrics.csv columns, e.g. [train/loss]"),
    "objective": (optional(lambda value: isinstance(value, dict)), "{value: EXPRESSION, direction: maximize or minimize}"),
    "search": (optional(lambda value: isinstance(value, dict)), "{space: {KEY: DISTRIBUTION}, trials: N, sampler: ..., pruner: ...}"),
    "out": (optional(is_text), "a folder, e.g. runs/studies/NAME"),
    "command": (listing(is_text), "a non-empty list, e.g. [train.py, fit]"),
}
GRID_VALUES = (listing(lambda value: value is None or isinstance(value, (str, int, float, bool)), distinct=True), "a non-empty list of distinct values (numbers, strings, true, false, null), e.g. [0.001, 0.0001]")
OBJECTIVE_KEYS = {
    "value": (is_text, "an expression over final_metrics.json keys, e.g. high_quality * modes / 8"),
    "direction": (lambda value: value in ("maximize", "minimize"), "maximize or minimize"),
}
SEARCH_KEYS = {
    "space": (lambda value: isinstance(value, dict) and bool(value) and all(map(is_text, value)), "a non-empty mapping of config keys to distributions, e.g. {model.init_args.lr_g: log-uniform 1e-5..1e-3}"),
    "trials": (lambda value: is_int(value) and value >= 1, "an integer >= 1 (the budget)"),
    "sampler": (optional(is_plugin), "{class_path: optuna.samplers.TPESampler, init_args: {...}}"),
    "pruner": (optional(is_plugin), "{class_path: optuna.pruners.MedianPruner, init_args: {...}}"),
    "report": (is_text, "a metric prefix, e.g. eval/"),
}


def check_value(file: Path, key: str, value: Any, valid: Callable[[Any], bool], expected: str) -> None:
    if not valid(value):
        raise StudyError(f"{file}: {key}: got {json.dumps(value, default=str)}; expected {expected}.")


def check_section(file: Path, prefix: str, spec: Any, schema: dict[str, tuple[Callable[[Any], bool], str]], required: tuple[str, ...]) -> None:
    """The study file, or its ``objective:`` or ``search:``: a mapping of known keys, each holding what it must."""
    if not isinstance(spec, dict):
        raise StudyError(f"{file}: got {json.dumps(spec, default=str)}; expected a mapping of study keys ({', '.join(schema)}).")
    unknown = sorted(str(key) for key in spec if key not in schema)
    if unknown:
        raise StudyError(f"{file}: unknown keys {', '.join(prefix + key for key in unknown)} (known: {', '.join(schema)}).")
    missing = [key for key in required if key not in spec]
    if missing:
        raise StudyError(f"{file}: {prefix}{missing[0]} is missing; expected {schema[missing[0]][1]}.")
    for key, value in spec.items():
        check_value(file, prefix + key, value, *schema[key])


# ---------------------------------------------------------------------------------------------- storage

STORAGE_FORMS = "sqlite:///PATH (relative to here), sqlite:////ABSOLUTE/PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DATABASE"

#: A database error's driver message (a pattern) -> what it means for the study, and the likely fix. SQLite's and
#: libpq's messages are the only thing that tells these apart: psycopg has no SQLSTATE for a failed connection.
STORAGE_FAULTS = [
    (r"file is not a database", "{database} is not an SQLite database: restore it from a backup, or point --storage elsewhere"),
    (r"malformed", "{database} is a damaged SQLite database: restore it from a backup, or point --storage elsewhere"),
    (r"database is locked", "{database} stayed locked by another process for over {lock_timeout:g} s: wait for it to finish, or raise --lock-timeout"),
    (r"unable to open database file", "cannot open {database}: check that its folder exists and that this user may write there"),
    (r"readonly database", "{database} is read-only for this user: check its permissions"),
    (r"disk is full|disk I/O error", "cannot write {database}: its disk is full or failing"),
    (r"no such table|relation \"\w+\" does not exist", "it holds no studies (no Optuna tables): check --storage, or start the study with `python study.py run STUDY`"),
    (r"Connection refused", "no PostgreSQL server answers at {host}:{port}: start the server, or check the host and port"),
    (r"resolve host|translate host name", "unknown host {host}: check the host"),
    (r"timeout expired|timed out", "{host}:{port} does not answer: check the host, the port and any firewall between"),
    (r"password authentication failed", "the server refused the password of {user}: check the password (in the URL or ~/.pgpass)"),
    (r"no password supplied", "the server wants a password for {user}: give it in the URL (USER:PASSWORD@HOST) or in ~/.pgpass"),
    (r"role \"[^\"]*\" does not exist", "the server has no user {user}: check the user name, or create the user (createuser {user})"),
    (r"database \"[^\"]*\" does not exist", "the server has no database {database}: check its name, or create it (createdb -O {user} {database})"),
    (r"no pg_hba.conf entry", "the server does not let {user} into {database} from here (its pg_hba.conf): ask its administrator"),
    (r"permission denied", "{user} may not use the study's tables in {database}: grant it the rights, or use the database's owner"),
    (r"too many clients|remaining connection slots", "the server at {host}:{port} takes no more connections: stop some workers, or raise its max_connections"),
    (r"server closed the connection|terminating connection|consuming input failed|starting up|shutting down", "the server at {host}:{port} went away: start it again, then run again (what is done is kept)"),
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
        raise StudyError(f"--storage {masked(url)}: SQLAlchemy knows no database {parsed.drivername!r}; give {STORAGE_FORMS}.") from None
    try:
        dialect.import_dbapi()
    except ImportError:
        raise StudyError(f"--storage {masked(url)}: its driver ({dialect.driver}) is not installed; give {STORAGE_FORMS}.") from None
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


def open_study(
    study: Study, url: str, heartbeat: int, grace: int, lock_timeout: float = LOCK_TIMEOUT
) -> tuple[optuna.Study, RDBStorage]:
    """Create the study (record its definition, enqueue its grid) or load it (its file unchanged). Heartbeats mark
    a dead worker's trial failed after ``grace`` seconds, and the retry callback puts it back in the queue."""
    storage = connect(
        url, lock_timeout, writing=True, heartbeat_interval=heartbeat, grace_period=grace,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
    )  # fmt: skip
    direction = study.objective.direction
    try:
        created = optuna.create_study(study_name=study.name, storage=storage, direction=direction, sampler=sampler_of(study), pruner=pruner_of(study))
    except optuna.exceptions.DuplicatedStudyError:
        loaded = optuna.load_study(study_name=study.name, storage=storage, sampler=sampler_of(study), pruner=pruner_of(study))
        loaded.sampler.reseed_rng()  # a seeded sampler would otherwise propose the creator's very trials again
        wait_for_grid(loaded)
        check_definition(study, loaded, url)
        if "definition" not in loaded.user_attrs:  # begun before definitions were recorded: this file's, from now on
            loaded.set_user_attr("definition", definition_of(study))
        enqueue_failed_points(study, loaded)
        return loaded, storage
    created.set_user_attr("definition", definition_of(study))
    for point in study.points() if study.search is None else []:
        created.enqueue_trial(point)
    created.set_user_attr("grid_enqueued", True)
    return created, storage


def sampler_of(study: Study) -> optuna.samplers.BaseSampler:
    # A grid's trials are all enqueued; the sampler only ever fills in their fixed values.
    return instantiate(study.search.sampler, optuna.samplers.TPESampler()) if study.search else optuna.samplers.RandomSampler(seed=0)


def pruner_of(study: Study) -> optuna.pruners.BasePruner:
    return instantiate(study.search.pruner, optuna.pruners.NopPruner()) if study.search else optuna.pruners.NopPruner()


def wait_for_grid(study: optuna.Study, timeout: float = 120.0) -> None:
    """A worker that did not create the study waits for its creator to finish enqueueing the grid."""
    deadline = time.monotonic() + timeout
    while not study.user_attrs.get("grid_enqueued"):
        if time.monotonic() > deadline:
            break  # its creator died while enqueueing: the missing points are enqueued below
        time.sleep(0.5)


def point_of(trial: optuna.trial.FrozenTrial) -> tuple:
    params = trial.system_attrs.get("fixed_params", trial.params)
    return tuple(sorted(params.items()))


def enqueue_failed_points(study: Study, optuna_study: optuna.Study) -> None:
    """A rerun retries the grid points whose every trial failed (or that were never enqueued)."""
    if study.search is not None:
        return
    alive = {point_of(t) for t in optuna_study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for point in study.points():
        if tuple(sorted(point.items())) not in alive:
            optuna_study.enqueue_trial(point, user_attrs={"retry": True})


def trial_id_of(storage: RDBStorage, optuna_study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(optuna_study.study_name), number)


class WaitingTrials:
    """The worker's view of the queue: the waiting trials' numbers, read once and claimed in order
    (an atomic WAITING -> RUNNING in the database), read again only when none of them is left.
    Unlike ``Study.ask`` this never creates a trial, so no grid point runs twice, and it does not
    read every trial of the study for each one it takes."""

    def __init__(self, optuna_study: optuna.Study, storage: RDBStorage) -> None:
        self.optuna_study, self.storage, self.numbers = optuna_study, storage, []

    def pop(self) -> optuna.Trial | None:
        for attempt in range(2):
            if not self.numbers or attempt:
                self.numbers = [t.number for t in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
            while self.numbers:
                trial_id = trial_id_of(self.storage, self.optuna_study, self.numbers.pop(0))
                try:
                    if self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                        return optuna.Trial(self.optuna_study, trial_id)
                except UpdateFinishedTrialError:
                    continue
        return None


def duplicate_of(optuna_study: optuna.Study, trial: optuna.Trial) -> int | None:
    """Workers that retry failed points at the same moment may enqueue a point twice (such trials are
    marked ``retry``); of the trials of one point that have not failed, the one with the lowest
    number runs and the others are dropped."""
    if not trial.user_attrs.get("retry"):
        return None
    trials = optuna_study.get_trials(deepcopy=False)
    mine = point_of(next(t for t in trials if t.number == trial.number))
    earlier = [t.number for t in trials if t.number < trial.number and t.state != TrialState.FAIL and point_of(t) == mine]
    return min(earlier) if earlier else None


def budget_left(study: Study, optuna_study: optuna.Study) -> bool:
    """A search samples new trials while fewer than its budget have been started and not failed
    (workers that check at the same moment may overshoot by one trial each)."""
    counted = [t for t in optuna_study.get_trials(deepcopy=False) if t.state != TrialState.FAIL]
    return len(counted) < study.search.trials


class Heartbeat:
    """Record the trial's heartbeat every ``interval`` seconds while its run trains."""

    def __init__(self, storage: RDBStorage, trial_id: int, interval: int) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.beat, args=(storage, trial_id, interval), daemon=True)

    def beat(self, storage: RDBStorage, trial_id: int, interval: int) -> None:
        while not self.stop.is_set():
            # A beat the database misses is within the grace; a lasting fault stops the worker at its next call.
            with contextlib.suppress(*DATABASE_ERRORS):
                storage.record_heartbeat(trial_id)
            self.stop.wait(interval)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------------- a worker


@dataclass
class Outcome:
    state: TrialState
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM reached the worker while its run trained."""


def suggest(study: Study, trial: optuna.Trial) -> dict[str, Any]:
    """The trial's point: its config, seed and (for a search) sampled keys. An enqueued or retried
    trial gets its fixed values back."""
    params = {"config": trial.suggest_categorical("config", study.configs)}
    params |= {key: trial.suggest_categorical(key, values) for key, values in study.grid.items()}
    params["seed"] = trial.suggest_categorical("seed", study.seeds)
    for key, dist in (study.search.distributions if study.search else {}).items():
        if isinstance(dist, CategoricalDistribution):
            params[key] = trial.suggest_categorical(key, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log)
        else:
            params[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    return params


def train_command(study: Study, params: dict[str, Any], run_dir: Path, storage_url: str, trial_number: int, gpu: int | None) -> list[str]:
    csv_logger = {"save_dir": str(run_dir.parent.parent), "name": run_dir.parent.name, "version": run_dir.name}  # = run_dir
    loggers = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_logger},
        {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {
            "save_dir": str(run_dir), "project": "genlab", "group": study.name, "name": f"{run_dir.relative_to(study.folder)}", "offline": True}},
    ]  # fmt: skip
    overrides = [part for key, value in params.items() if key not in ("config", "seed") for part in (f"--{key}", json.dumps(value) if isinstance(value, str) else repr(value))]
    pruning = []
    if study.search and study.search.pruner is not None:
        callback = {"class_path": "callbacks.optuna_pruning.OptunaPruning", "init_args": {
            "storage": storage_url, "study_name": study.name, "trial_number": trial_number,
            "objective": study.objective.value, "prefix": study.search.report, "pruner": study.search.pruner}}  # fmt: skip
        pruning = ["--trainer.callbacks+", json.dumps(callback)]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    return [
        sys.executable, *study.command, "--config", str(ROOT / params["config"]), "--seed_everything", str(params["seed"]),
        "--trainer.logger", json.dumps(loggers), "--trainer.enable_progress_bar", "false",
        *(GPU_ARGS if gpu is not None else []), *study.train_args, *overrides, *pruning,
        *(["--ckpt_path", str(checkpoint)] if checkpoint.exists() else []),
    ]  # fmt: skip


def run_trial(study: Study, params: dict[str, Any], storage_url: str, trial_number: int, threads: int, gpu: int | None) -> Outcome:
    """Train the point in its own process (resuming its ``last.ckpt`` if it has one) and read its metrics.
    The process's output goes to ``<run>.log`` beside the run folder (appended over segments)."""
    claim_folder(study, storage_url)
    run_dir = study.run_dir(params)
    results_path = run_dir / "final_metrics.json"
    if results_path.exists():  # trained before (an earlier trial, or a sweep folder moved here)
        return outcome_of(study, run_dir, json.loads(results_path.read_text()))
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.ckpt").exists():
        set_aside(run_dir)  # a failed attempt with nothing to resume: kept, and the point starts over
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(study, params, run_dir, storage_url, trial_number, gpu)
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path, "WANDB_SILENT": "true"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    log_path = log_of(run_dir)
    start = time.perf_counter()
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # Its own session: a Ctrl-C at the terminal reaches the worker only, which passes on one SIGINT.
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=stop_with_parent)  # noqa: PLW1509 - one libc call, no locks
        try:
            returncode = wait_interruptibly(process)
        finally:
            wall = add_segment(run_dir, time.perf_counter() - start)
    if returncode == 0 and results_path.exists():
        metrics = json.loads(results_path.read_text()) | {"wall_seconds": wall}
        results_path.write_text(json.dumps(metrics, indent=2))
        return outcome_of(study, run_dir, metrics)
    return Outcome(TrialState.FAIL, reason=failure_reason(log_path, returncode))


def log_of(run_dir: Path) -> Path:
    return run_dir.with_name(f"{run_dir.name}.log")


def set_aside(run_dir: Path) -> None:
    attempt = 1
    while run_dir.with_name(f"{run_dir.name}.attempt_{attempt}").exists():
        attempt += 1
    run_dir.rename(run_dir.with_name(f"{run_dir.name}.attempt_{attempt}"))


LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None  # loaded here: the forked child only calls it


def stop_with_parent() -> None:
    """In the run's process: SIGTERM (save ``last.ckpt`` and stop) when the worker dies, even by SIGKILL."""
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def hold_off_signals() -> None:
    """After the first Ctrl-C or SIGTERM, the others only say what is under way: the worker waits for its run to
    write ``last.ckpt`` and puts its trial back in the queue before it exits, as impatient as the user may be."""

    def note(signum: int, frame: object) -> None:
        os.write(2, f"study: {signal.Signals(signum).name} again: still stopping the run (it writes last.ckpt), then its trial goes back in the queue\n".encode())

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, note)


def wait_interruptibly(process: subprocess.Popen) -> int:
    """Wait for the run; on Ctrl-C or SIGTERM pass SIGINT on (the run saves ``last.ckpt`` at the next
    batch and exits), wait for it, then raise :class:`Interrupted`."""
    try:
        return process.wait()
    except KeyboardInterrupt:
        hold_off_signals()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
        raise Interrupted from None


def outcome_of(study: Study, run_dir: Path, metrics: dict) -> Outcome:
    numbers = {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
    if (run_dir / PRUNED_FILE).exists():
        return Outcome(TrialState.PRUNED, numbers, json.loads((run_dir / PRUNED_FILE).read_text())["reason"])
    try:
        value = study.objective(numbers)
    except KeyError as error:
        return Outcome(TrialState.FAIL, numbers, str(error.args[0]))
    if not math.isfinite(value):
        return Outcome(TrialState.FAIL, numbers, f"the objective {study.objective.value} is {value}")
    return Outcome(TrialState.COMPLETE, numbers | {"objective": value})


def failure_reason(log: Path, returncode: int) -> str:
    """The run's one-line error (train.py prints ``genlab: error: ...``), else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for marker in ("genlab: error:", "error:") for line in reversed(lines) if marker in line.lower()]
    return (errors or lines[-1:] or [f"exit code {returncode}, no output"])[0]


def add_segment(run_dir: Path, seconds: float) -> float:
    """Record one process's wall time in ``<run>.segments.json``; return the run's total so far."""
    path = run_dir.with_name(f"{run_dir.name}.segments.json")
    segments = [*json.loads(path.read_text()), seconds] if path.exists() else [seconds]
    path.write_text(json.dumps(segments))
    return sum(segments)


def work(study: Study, args: argparse.Namespace, gpu: int | None = None, label: str = "worker", train: Callable[..., Outcome] = run_trial) -> int:
    """Run trials until none waits (a search: until its budget is spent), each with ``train`` (a
    train.py process; benchmarks/study_storage.py passes a no-op). Returns the exit code: 0 if every
    trial run here completed or was pruned, 1 if one failed, 130 if interrupted."""
    optuna_study, storage = open_study(study, args.storage, args.heartbeat, args.grace, args.lock_timeout)
    failed, queue = 0, WaitingTrials(optuna_study, storage)
    while True:
        fail_stale_trials(optuna_study)  # a dead worker's trial: failed, then re-queued by the retry callback
        trial = queue.pop()
        if trial is None and study.search is not None and budget_left(study, optuna_study):
            trial = optuna_study.ask()
        if trial is None:
            break
        if (first := duplicate_of(optuna_study, trial)) is not None:
            trial.set_user_attr("reason", f"duplicate of trial {first} (enqueued twice by workers started together); not run")
            optuna_study.tell(trial, state=TrialState.FAIL)
            continue
        params = suggest(study, trial)
        run_dir = study.run_dir(params)
        trial.set_user_attr("run_dir", str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}" + (f":gpu{gpu}" if gpu is not None else ""))
        name = f"{label_of(params)} seed {params['seed']}" + (f" (trial {trial.number})" if study.search else "")
        print(f"[{label}] {name}: started", flush=True)
        try:
            with Heartbeat(storage, trial_id_of(storage, optuna_study, trial.number), args.heartbeat):
                outcome = train(study, params, args.storage, trial.number, args.threads, gpu)
        except (Interrupted, KeyboardInterrupt):  # KeyboardInterrupt: before its run started, or after it ended
            hold_off_signals()
            trial.set_user_attr("reason", "interrupted (Ctrl-C or SIGTERM); re-queued, resumes from its last.ckpt")
            frozen = optuna_study.tell(trial, state=TrialState.FAIL)
            RetryHeartbeatStaleTrialCallback()(optuna_study, frozen)
            print(f"[{label}] {name}: interrupted; the trial is back in the queue", flush=True)
            return 130
        trial.set_user_attr("metrics", outcome.metrics)
        trial.set_user_attr("reason", outcome.reason)  # also over a retried trial's copy of the earlier reason
        if outcome.state == TrialState.COMPLETE:
            optuna_study.tell(trial, outcome.metrics["objective"])
            print(f"[{label}] {name}: done, {study.objective.value} = {outcome.metrics['objective']:.4g}", flush=True)
        else:
            optuna_study.tell(trial, state=outcome.state)
            failed += outcome.state == TrialState.FAIL
            where = f"; log: {log_of(run_dir)}" if outcome.state == TrialState.FAIL else ""
            print(f"[{label}] {name}: {outcome.state.name.lower()} ({outcome.reason}){where}", flush=True)
    running = len(optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if running:
        print(f"[{label}] nothing waits; {running} trial(s) still running in other workers (should one of them have died, its trial is re-queued {args.grace} s after its last heartbeat: run again then)")
    return 1 if failed else 0


def run(study: Study, args: argparse.Namespace) -> int:
    """One worker here; with ``--workers N`` or several ``--gpus``, one worker process each."""
    check_owner(study, args.storage)  # before the database: a study refused here is not created there
    check_writable(study)
    slots = args.gpus or [None] * args.workers
    if len(slots) == 1:
        return work(study, args, slots[0], label=f"gpu {slots[0]}" if slots[0] is not None else "worker")
    common = ["--storage", args.storage, "--threads", str(args.threads), "--heartbeat", str(args.heartbeat), "--grace", str(args.grace), "--lock-timeout", str(args.lock_timeout)]
    workers = []
    for slot in slots:
        workers.append(subprocess.Popen([sys.executable, __file__, "run", str(args.study), *common, *(["--gpus", str(slot)] if slot is not None else [])]))
        time.sleep(1.0)  # the first creates the study and enqueues its grid
    return max(worker.wait() for worker in workers)


# ---------------------------------------------------------------------------------------------- outputs


def load_for_reading(study: Study, args: argparse.Namespace) -> optuna.Study:
    try:
        loaded = optuna.load_study(study_name=study.name, storage=connect(args.storage, args.lock_timeout, writing=False))
    except KeyError:
        start = shlex.join(["python", os.path.relpath(__file__), "run", str(args.study), "--storage", masked(args.storage)])
        raise StudyError(f"no study {study.name!r} in {masked(args.storage)}: start it with `{start}`.") from None
    check_definition(study, loaded, args.storage)
    return loaded


def digits_for(value: float, percent: bool) -> int:
    """Decimals of a table cell: 1 for percentages and values >= 10, 3 below 1, else 2."""
    return 1 if percent or abs(value) >= 10 else 3 if abs(value) < 1 else 2


def format_value(value: float, percent: bool) -> str:
    value = value * 100.0 if percent else value
    return f"{value:.{digits_for(value, percent)}f}"


def mean_std(values: list[float], percent: bool) -> str:
    if not values:
        return "–"
    values = [v * 100.0 if percent else v for v in values]
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    digits = digits_for(mean, percent)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def completed_by_point(optuna_study: optuna.Study) -> dict[tuple, dict[str, float]]:
    return {point_of(t): t.user_attrs.get("metrics", {}) for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def grid_table(study: Study, optuna_study: optuna.Study) -> str:
    """Markdown: one row per config, ``mean ± std`` over its completed seeds (``NAME:%``: a fraction in %)."""
    done = completed_by_point(optuna_study)
    names = [m.removesuffix(":%") for m in study.metrics]
    header = ["config", "runs", *[f"{n} (%)" if m.endswith(":%") else n for n, m in zip(names, study.metrics)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, variant in study.variants():
        runs = [done[key] for seed in study.seeds if (key := tuple(sorted({**variant, "seed": seed}.items()))) in done]
        cells = [label, f"{len(runs)}/{len(study.seeds)}"]
        for name, metric in zip(names, study.metrics):
            cells.append(mean_std([r[name] for r in runs if name in r and math.isfinite(r[name])], metric.endswith(":%")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def search_table(study: Study, optuna_study: optuna.Study) -> str:
    """Markdown: every completed trial, best first: its sampled keys, objective and metrics."""
    trials = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials.sort(key=lambda t: t.value, reverse=study.objective.direction == "maximize")
    keys = list(study.search.distributions)
    names = [m.removesuffix(":%") for m in study.metrics]
    header = ["trial", *[short_key(key) for key in keys], study.objective.value, *[f"{n} (%)" if m.endswith(":%") else n for n, m in zip(names, study.metrics)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        metrics = t.user_attrs.get("metrics", {})
        cells = [str(t.number), *[f"{t.params[k]:.3g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys], f"{t.value:.4g}"]
        cells += [format_value(metrics[n], m.endswith(":%")) if n in metrics else "–" for n, m in zip(names, study.metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    states = {state.name.lower(): len(optuna_study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    return "\n".join(lines) + "\n\n" + ", ".join(f"{n} {s}" for s, n in states.items() if n) + f" of a budget of {study.search.trials}\n"


def side_by_side(study: Study, patterns: list[str]) -> Path | None:
    """One column per config, one row per seed and pattern: the last file matching the pattern in each run."""
    from matplotlib.image import imread

    from callbacks.plots import new_figure

    rows, columns = [(seed, pattern) for seed in study.seeds for pattern in patterns], study.variants()
    figure = new_figure(4 * len(columns), 3.6 * len(rows))
    found = False
    for row, (seed, pattern) in enumerate(rows):
        for column, (label, variant) in enumerate(columns):
            axes = figure.add_subplot(len(rows), len(columns), row * len(columns) + column + 1)
            axes.set_axis_off()
            matches = sorted(study.run_dir({**variant, "seed": seed}).glob(pattern))
            if matches:
                axes.imshow(imread(matches[-1]))
                found = True
            name = f", {matches[-1].stem}" if matches and len(patterns) > 1 else ""
            axes.set_title(f"{label}, seed {seed}{name}", fontsize=9)
    if not found:
        return None
    path = study.folder / "side_by_side.png"
    figure.savefig(path, dpi=110)
    return path


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's CSVLogger files: ``metrics.csv``, after those of earlier segments of a run
    resumed before 2026-12-01 (``metrics_segment_<k>.csv``; train.py now keeps one continuous file)."""
    segments = sorted(run_dir.glob("metrics_segment_*.csv"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    return [row for path in [*segments, run_dir / "metrics.csv"] if path.exists() for row in csv.DictReader(path.open())]


def read_curve(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """``(epochs completed, value)`` of every row of the run's metrics that holds ``column`` (where a
    resumed run logged an epoch twice, the later value comes later). A row logged outside
    ``self.log`` (e.g. the quality metrics) may lack the epoch: it takes the epoch of the rows at the
    same step."""
    rows = metrics_rows(run_dir)
    epoch_at_step = {row["step"]: int(row["epoch"]) for row in rows if row.get("epoch")}
    return [
        (epoch_at_step[row["step"]] + 1, float(row[column]))
        for row in rows
        if row.get(column) and (row.get("epoch") or row["step"] in epoch_at_step)
    ]


def read_points(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """``(n, value)`` of the n-th logged value of ``column`` in the run: for a metric logged several
    times an epoch, such as the classifier's running loss (every 2,000 minibatches)."""
    return list(enumerate((float(row[column]) for row in metrics_rows(run_dir) if row.get(column)), start=1))


def curves(study: Study, columns: list[str]) -> Path | None:
    """One panel per metrics.csv column, one line per config against epoch (``COLUMN:points``:
    against the count of logged values): the mean over seeds where every seed has a value, and the
    range of the seeds shaded. Unfinished runs' curves go as far as they got."""
    from callbacks.plots import new_figure

    figure = new_figure(5 * len(columns), 3.6)
    found = False
    for axes, spec in zip(figure.subplots(1, len(columns), squeeze=False)[0], columns):
        column, by_point = spec.removesuffix(":points"), spec.endswith(":points")
        for label, variant in study.variants():
            read = read_points if by_point else read_curve
            runs = [dict(read(study.run_dir({**variant, "seed": seed}), column)) for seed in study.seeds]
            epochs = sorted(set.intersection(*(set(run) for run in runs)))
            if not epochs:
                continue
            values = [[run[epoch] for run in runs] for epoch in epochs]
            line = axes.plot(epochs, [statistics.mean(v) for v in values], marker=".", label=f"{label} ({len(runs)} seeds)")[0]
            axes.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.2)
            found = True
        axes.set(title=column, xlabel="logged value (in order)" if by_point else "epoch")
        plotted = [y for line in axes.get_lines() for y in line.get_ydata()]
        if plotted and min(plotted) > 0 and max(plotted) / min(plotted) > 20:  # FID falls by orders of magnitude
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if not found:
        return None
    path = study.folder / "curves.png"
    figure.savefig(path, dpi=110)
    return path


def table(study: Study, args: argparse.Namespace) -> int:
    """``table.md`` (and the figures) from the database: at any point of a study, a partial one too."""
    check_owner(study, args.storage)
    optuna_study = load_for_reading(study, args)
    check_writable(study)
    markdown = search_table(study, optuna_study) if study.search else grid_table(study, optuna_study)
    (study.folder / "table.md").write_text(markdown)
    print(markdown, end="")
    print(f"table: {study.folder / 'table.md'}")
    if study.figure and not study.search and (figure := side_by_side(study, study.figure)):
        print(f"figure: {figure}")
    if study.curves and not study.search and (figure := curves(study, study.curves)):
        print(f"figure: {figure}")
    return 0


def status(study: Study, args: argparse.Namespace) -> int:
    """One line per trial that is not done: running (where), waiting, failed (why); then the counts."""
    optuna_study = load_for_reading(study, args)
    trials = optuna_study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            continue
        params = t.system_attrs.get("fixed_params", t.params)
        where = {TrialState.RUNNING: t.user_attrs.get("worker", ""), TrialState.FAIL: t.user_attrs.get("reason", ""), TrialState.PRUNED: t.user_attrs.get("reason", "")}
        print(f"trial {t.number:4d} {t.state.name.lower():8s} {label_of(params)} seed {params.get('seed', '?')}  {where.get(t.state, '')}")
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    total = study.search.trials if study.search else len(study.points())
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    print(f"{study.name}: {done}/{total} done; " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


def at_least(kind: type, minimum: float) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` (int or float) >= ``minimum``, refused with one line at parse time."""

    def parse(text: str) -> Any:
        with contextlib.suppress(ValueError):
            if math.isfinite(value := kind(text)) and value >= minimum:
                return value
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'} >= {minimum:g}")

    return parse


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        """A bad command line as the other faults end: one line, ``study: error: ...``, exit code 2."""
        self.exit(2, f"study: error: {message} (python study.py --help shows the options).\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "table", "status"))
    parser.add_argument("study", type=Path, help="a study file (configs/studies/NAME.yaml), or its NAME")
    parser.add_argument("--storage", default=os.environ.get("GENLAB_STUDY_STORAGE", DEFAULT_STORAGE), help="SQLAlchemy URL of the study database (default: $GENLAB_STUDY_STORAGE or sqlite:///runs/studies.db)")
    parser.add_argument("--threads", type=at_least(int, 1), default=1, help="CPU threads per run (default 1: on a 2-core machine, run two workers)")
    parser.add_argument("--workers", type=at_least(int, 1), default=1, help="worker processes on this machine's CPU (default 1)")
    parser.add_argument("--gpus", nargs="+", type=at_least(int, 0), help="one worker per GPU index, instead of --workers (name one twice to run two runs on it)")
    parser.add_argument("--heartbeat", type=at_least(int, 1), default=60, help="seconds between a running trial's heartbeats (default 60)")
    parser.add_argument("--grace", type=at_least(int, 1), default=300, help="seconds without a heartbeat before a trial counts as dead and is re-queued (default 300)")
    parser.add_argument("--lock-timeout", type=at_least(float, 0), default=LOCK_TIMEOUT, help=f"seconds to wait for a SQLite database that another process holds locked (default {LOCK_TIMEOUT:g})")
    args = parser.parse_args(argv)
    if args.grace <= args.heartbeat:  # a live trial would count as dead between two heartbeats, and run twice
        parser.error(f"--grace {args.grace} must be longer than --heartbeat {args.heartbeat}")
    path = args.study if args.study.suffix else ROOT / "configs" / "studies" / f"{args.study}.yaml"
    # Ctrl-C, and a batch system's SIGTERM: the run stops with last.ckpt and its trial is re-queued. SIGINT too even
    # where the shell started the worker with it ignored (a `nohup ... &` job), so `kill -INT` always stops it cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        study = Study.load(path)
        with database_errors(args.storage, args.lock_timeout):
            return {"run": run, "table": table, "status": status}[args.action](study, args)
    except StudyError as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # between trials: nothing was running, nothing to re-queue
        print("study: stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
