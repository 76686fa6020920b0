"""Where a run's files go, and who may write there.

One run, one folder: ``<root>/runs/<run_name>/version_N/`` holds a run's metrics, checkpoints,
figures and resolved config, and its W&B run lives under ``<root>/runs/wandb/``. ``<root>`` is the
working directory, or ``--trainer.default_root_dir`` (the Lightning way to move a run), which every
logger with a relative ``save_dir`` and the logger-less run folder follow.

A run resumed from a checkpoint inside its own folder (``runs/<run>/version_N/checkpoints/last.ckpt``)
goes on in that folder and in the same W&B run: ``metrics.csv`` keeps the earlier rows up to the
checkpoint, the W&B id is the one the folder's ``config.yaml`` recorded, and nothing is split across
``version_N`` and ``version_N+1``. A checkpoint from anywhere else starts a new version.

While a run writes to its folder it holds an exclusive ``flock`` on ``<folder>/.genlab.lock``: a
second run started on the same folder (a resume typed twice, two study workers) is refused instead
of interleaving its files with the first one's. The kernel drops the lock when the process ends,
also on SIGKILL, so a crashed run never leaves its folder locked.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from cli.run_metrics import continue_metrics
from core.errors import ConfigError

RUNS = "runs"
LOCK_FILE = ".genlab.lock"
#: Loggers that keep each run in its own ``version_N`` folder (W&B keeps its runs in one shared folder).
VERSIONED_LOGGERS = (CSVLogger, TensorBoardLogger)
VERSION_FOLDER = re.compile(r"version_(\d+)")

#: Open lock files of the folders this process claimed, closed (unlocked) by :func:`release_claims`.
_held_locks: list[Any] = []
#: Folders this process created for a fresh run: what a run stopped before training removes.
_created_folders: list[Path] = []


def runs_root(default_root_dir: str | None) -> Path:
    """``<root>/runs``: the folder of every run, moved by ``--trainer.default_root_dir``."""
    return Path(default_root_dir or ".") / RUNS


def require_folder_name(run_name: str) -> None:
    """``--run_name`` names one folder under ``runs/``: a path in it would put the run elsewhere."""
    if run_name in ("", ".", "..") or "/" in run_name or "\\" in run_name:
        raise ConfigError(
            f"--run_name {run_name!r} must be a folder name (not empty, no '/', not '.' or '..'): "
            "the run goes to runs/<run_name>/."
        )


def with_default_run_name(args: list[str], subcommands: tuple[str, ...]) -> list[str]:
    """``args`` with ``--run_name <experiment>`` inserted right after the subcommand, the experiment
    being the file name (without ``.yaml``) of the first ``--config``: a ``run_name`` in a config file
    or later on the command line still wins."""
    subcommand = next((i for i, arg in enumerate(args) if arg in subcommands), None)
    name = experiment_name(args[subcommand + 1 :]) if subcommand is not None else None
    return args if name is None else [*args[: subcommand + 1], "--run_name", name, *args[subcommand + 1 :]]


def experiment_name(args: list[str]) -> str | None:
    """The file name (without ``.yaml``) of the first ``--config`` in ``args``: the experiment."""
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            return Path(args[index + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return None


def claim_for(trainer: Any, checkpoint: str | None, steps_done: int | None) -> bool:
    """One run, one folder: a fresh fit creates its folder (``runs/<run_name>/version_N``) atomically
    before anything is written, and refuses one that exists (named by a logger's ``version``, or
    claimed a moment ago by a run started at the same time); a fit resumed from a checkpoint inside
    its folder continues there, and its ``metrics.csv``. Either way the folder stays locked while the
    run writes to it. Returns whether the run resumes in place."""
    logger = trainer.logger
    if not trainer.is_global_zero or not (logger is None or isinstance(logger, VERSIONED_LOGGERS)):
        return False
    log_dir = Path(trainer.log_dir)
    in_place = bool(checkpoint) and log_dir.resolve() in Path(checkpoint).resolve().parents
    claim(log_dir, resuming_in_place=in_place)
    if in_place:
        continue_metrics(trainer.loggers, steps_done)
    else:
        start_csv_writers(trainer.loggers, log_dir)
    return in_place


def start_csv_writers(loggers: list[Any], folder: Path) -> None:
    """Create the writers of the CSV loggers of a fresh run's ``folder`` now that :func:`claim` made it: it
    holds only the lock file, so Lightning's warning that the folder "exists and is not empty" and that
    earlier log files will be deleted is not true of it (a folder of another run is refused before)."""
    for logger in loggers:
        if isinstance(logger, CSVLogger) and Path(logger.log_dir).resolve() == folder.resolve():
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
                logger.experiment  # noqa: B018 - the property creates the writer


def fresh_version_dir(root: Path) -> Path:
    """``root/version_N`` with N one past the highest taken."""
    taken = [int(match.group(1)) for path in root.glob("version_*") if (match := VERSION_FOLDER.fullmatch(path.name))]
    return root / f"version_{max(taken, default=-1) + 1}"


def own_run_folder(checkpoint: Path, runs_of_name: Path) -> Path | None:
    """The ``runs_of_name/version_N`` folder that ``checkpoint`` lies in (``.../version_N/checkpoints/x.ckpt``), if any."""
    folder = checkpoint.resolve().parent.parent
    if (
        checkpoint.resolve().parent.name == "checkpoints"
        and VERSION_FOLDER.fullmatch(folder.name)
        and folder.parent == runs_of_name.resolve()
    ):
        return runs_of_name / folder.name  # as the run wrote it (relative or not): its checkpoints record that path
    return None


def place_run(trainer_config: Any, run_name: str, checkpoint: Path | None) -> None:
    """Point the config's loggers (before they are built) at ``<root>/runs/<run_name>``; for a
    checkpoint inside one of that run's folders, at that folder and its W&B run. Without a versioned
    logger, ``default_root_dir`` becomes the run folder."""
    root = trainer_config.default_root_dir
    loggers = trainer_config.logger if isinstance(trainer_config.logger, list) else [trainer_config.logger]
    loggers = [logger for logger in loggers if logger and not isinstance(logger, bool)]
    resumed = None
    for logger in loggers:
        args = logger.init_args
        if "name" in args and args.name is None:
            args.name = run_name
        if root is not None and "save_dir" in args and args.save_dir is not None and not Path(args.save_dir).is_absolute():
            args.save_dir = str(Path(root) / args.save_dir)
        if is_class(logger, VERSIONED_LOGGERS) and checkpoint is not None:
            own = own_run_folder(checkpoint, Path(args.save_dir, args.name)) if args.get("version") is None else None
            if own is not None:
                args.version = int(VERSION_FOLDER.fullmatch(own.name).group(1))
            folder = versioned_folder(args)
            if folder is not None and folder.resolve() in checkpoint.resolve().parents:
                resumed = folder
    for logger in loggers:
        if is_class(logger, (WandbLogger,)) and logger.init_args.get("id") is None:
            earlier = wandb_id_of(resumed) if resumed is not None else None
            # Recorded in config.yaml and read back on resume; a letter first, so that it never reads back as a
            # number (hex digits alone can: "8e401234" is a float, inf, and the resume was refused).
            logger.init_args.id = earlier or f"g{secrets.token_hex(4)}"
            if earlier:
                logger.init_args.resume = "allow"
    if not any(is_class(logger, VERSIONED_LOGGERS) for logger in loggers):
        runs_of_name = runs_root(root) / run_name
        folder = (own_run_folder(checkpoint, runs_of_name) if checkpoint is not None else None) or fresh_version_dir(runs_of_name)
        trainer_config.default_root_dir = str(folder)


def versioned_folder(args: Any) -> Path | None:
    """A CSV or TensorBoard logger's folder, ``save_dir/name/version_N`` (a string version is the folder's name)."""
    if args.get("version") is None:
        return None
    version = args.version if isinstance(args.version, str) else f"version_{args.version}"
    return Path(args.save_dir, args.name or "", version)


def is_class(logger: Any, classes: tuple[type, ...]) -> bool:
    """Whether a logger's config (``class_path``, before instantiation) names one of ``classes``."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in classes} | {cls.__name__ for cls in classes}
    return logger.class_path in names or logger.class_path.rsplit(".", 1)[-1] in names


def wandb_id_of(folder: Path) -> str | None:
    """The W&B run id the run in ``folder`` logged to, as its ``config.yaml`` recorded it."""
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    loggers = (config or {}).get("trainer", {}).get("logger") or []
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if isinstance(logger, dict) and str(logger.get("class_path", "")).endswith("WandbLogger"):
            return (logger.get("init_args") or {}).get("id")
    return None


def claim(folder: Path, resuming_in_place: bool) -> None:
    """Take ``folder`` for this process: create it (a fresh run: it must not exist), then hold its lock."""
    if not resuming_in_place:
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            refuse_if_in_use(folder)
            held = sorted(path.name for path in folder.iterdir())[:4] if folder.is_dir() else []
            raise ConfigError(
                f"{folder} already holds another run ({', '.join(held) or 'empty, claimed by another run'}): "
                "leave out --trainer.logger.init_args.version to take the next free folder, or remove it."
            ) from None
        _created_folders.append(folder)
    lock = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 - held open until the run ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        refuse_if_in_use(folder)
        raise ConfigError(f"{folder} is in use by another run: wait for it to end, then try again.") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _held_locks.append(lock)


def remove_fresh_claims() -> bool:
    """Remove the folders this process created, if no checkpoint reached them (a run stopped
    before it trained); returns whether it created any."""
    created = bool(_created_folders)
    while _created_folders:
        folder = _created_folders.pop()
        if not any(folder.glob("checkpoints/*.ckpt")):
            shutil.rmtree(folder, ignore_errors=True)
    return created


def refuse_if_in_use(folder: Path) -> None:
    """Refuse ``folder`` if another process holds its lock, naming that process."""
    if not (folder / LOCK_FILE).is_file():
        return
    with open(folder / LOCK_FILE) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock.read().strip() or "unknown"
            raise ConfigError(
                f"{folder} is in use by another run (process {holder}): "
                f"wait for it to end, or stop it (kill -INT {holder}), then resume."
            ) from None


def release_claims() -> None:
    """Unlock the folders this process claimed (the end of ``train.main``; process exit does it too)."""
    while _held_locks:
        _held_locks.pop().close()
    _created_folders.clear()
