"""One trial's run: a ``train.py`` process (its command line, environment and log), what it left in its folder read
back as the trial's outcome (completed, pruned, failed with its one-line reason), and the worker's signals while
it trains: Ctrl-C or SIGTERM passes one SIGINT on, so that the run writes ``last.ckpt`` and its trial resumes."""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from cli.run_metrics import add_segment, write_member_metrics
from core.stopping import NoteSignals, Stopped, handle_signals
from studies.storage import claim_folder
from studies.study_file import PRUNED_FILE, ROOT, Study

#: What a run on one of ``--gpus`` adds to its command line (before the study's own train arguments).
GPU_ARGS = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]


@dataclass
class Outcome:
    state: TrialState
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def train_command(
    study: Study, params: dict[str, Any], run_dir: Path, storage_url: str, trial_number: int, gpu: int | None
) -> list[str]:
    csv_logger = {"save_dir": str(run_dir.parent.parent), "name": run_dir.parent.name, "version": run_dir.name}  # = run_dir
    loggers = [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": csv_logger},
        {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {
            "save_dir": str(run_dir), "project": "genlab", "group": study.name,
            "name": f"{run_dir.relative_to(study.folder)}", "offline": True}},
    ]  # fmt: skip
    overrides = [
        part
        for key, value in params.items()
        if key not in ("config", "seed")
        for part in (f"--{key}", json.dumps(value) if isinstance(value, str) else repr(value))
    ]
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


def run_trial(
    study: Study, params: dict[str, Any], storage_url: str, trial_number: int, threads: int, gpu: int | None
) -> Outcome:
    """Train the point in its own process (resuming its ``last.ckpt`` if it has one) and read its metrics.
    The process's output goes to ``<run>.log`` beside the run folder (appended over segments)."""
    claim_folder(study, storage_url)
    run_dir = study.run_dir(params)
    results_path = run_dir / "final_metrics.json"
    if results_path.exists():  # trained before (an earlier trial, or a sweep folder moved here)
        return outcome_of(study, run_dir, json.loads(results_path.read_text()))
    command = train_command(study, params, fresh_run_dir(run_dir), storage_url, trial_number, gpu)
    returncode, wall = run_process(command, run_dir, threads, gpu)
    if returncode == 0 and results_path.exists():
        metrics = json.loads(results_path.read_text()) | {"wall_seconds": wall}
        results_path.write_text(json.dumps(metrics, indent=2))
        return outcome_of(study, run_dir, metrics)
    return Outcome(TrialState.FAIL, reason=failure_reason(log_of(run_dir), returncode))


def run_population(
    study: Study, points: list[dict[str, Any]], storage_url: str, trial_numbers: list[int], threads: int, gpu: int | None
) -> list[Outcome]:
    """Train the seeds of ``points`` (one variant) as one population in one process (``--model.init_args.seeds``),
    in ``seeds_<s0>_<s1>...`` (resuming its ``last.ckpt``); then each seed's run folder becomes a link to its
    member's folder, holding its ``final_metrics.json``, figures and ``metrics.csv``, and each point's outcome is
    read from there, as a single run's. A point whose folder holds results already is recorded without training."""
    claim_folder(study, storage_url)
    outcomes: dict[int, Outcome] = {}
    for index, params in enumerate(points):
        results_path = study.run_dir(params) / "final_metrics.json"
        if results_path.exists():
            outcomes[index] = outcome_of(study, study.run_dir(params), json.loads(results_path.read_text()))
    training = [index for index in range(len(points)) if index not in outcomes]
    if training:
        seeds = [points[index]["seed"] for index in training]
        population_dir = study.population_dir(points[0], seeds)
        command = train_command(
            study, points[training[0]], fresh_run_dir(population_dir), storage_url, trial_numbers[training[0]], gpu
        )
        command += ["--model.init_args.seeds", json.dumps(seeds)]
        returncode, wall = run_process(command, population_dir, threads, gpu)
        for member, index in enumerate(training):
            outcomes[index] = member_outcome(study, points[index], population_dir, member, returncode, wall)
    return [outcomes[index] for index in range(len(points))]


def member_outcome(
    study: Study, params: dict[str, Any], population_dir: Path, member: int, returncode: int, wall: float
) -> Outcome:
    """Member ``member`` of a finished population process: its folder linked as the point's run folder, its metrics
    with the process's ``wall_seconds`` (the time of all members together) and ``population`` (their number)."""
    member_dir = population_dir / f"member_{member}"
    results_path = member_dir / "final_metrics.json"
    if returncode != 0 or not results_path.exists():
        return Outcome(TrialState.FAIL, reason=failure_reason(log_of(population_dir), returncode))
    write_member_metrics(population_dir, member)
    members = len(population_dir.name.split("_")) - 1
    metrics = json.loads(results_path.read_text()) | {"wall_seconds": wall, "population": members}
    results_path.write_text(json.dumps(metrics, indent=2))
    run_dir = study.run_dir(params)
    if run_dir.is_symlink():
        run_dir.unlink()
    elif run_dir.exists():
        set_aside(run_dir)
    run_dir.symlink_to(os.path.relpath(member_dir, run_dir.parent), target_is_directory=True)
    return outcome_of(study, run_dir, metrics)


def fresh_run_dir(run_dir: Path) -> Path:
    """``run_dir``, ready for a process: kept if it holds a ``last.ckpt`` to resume, else a failed attempt's
    folder set aside (kept) so that the point starts over."""
    if run_dir.exists() and not (run_dir / "checkpoints" / "last.ckpt").exists():
        set_aside(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_process(command: list[str], run_dir: Path, threads: int, gpu: int | None) -> tuple[int, float]:
    """Run ``command`` (a train.py process logging to ``run_dir``) with ``threads`` CPU threads, on ``gpu`` if
    given; its output appended to ``<run>.log``. Returns its exit code and the run's wall time over its segments."""
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path, "WANDB_SILENT": "true"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    start = time.perf_counter()
    with log_of(run_dir).open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # Its own session: a Ctrl-C at the terminal reaches the worker only, which passes on one SIGINT.
        # preexec_fn: one libc call, no locks.
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=stop_with_parent,  # noqa: PLW1509
        )
        try:
            returncode = wait_for_run(process)
        finally:
            wall = add_segment(run_dir, time.perf_counter() - start)
    return returncode, wall


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


#: A worker's answer to each Ctrl-C or SIGTERM after the first, while its run stops.
STILL_STOPPING = "study: {signal} again: still stopping the run (it writes last.ckpt), then its trial goes back in the queue"


def hold_off_signals(received: signal.Signals) -> None:
    """After the first Ctrl-C or SIGTERM (``received``), the others only say what is under way: the worker waits for its run to
    write ``last.ckpt`` and puts its trial back in the queue before it exits, as impatient as the user may be."""
    note = NoteSignals(again=STILL_STOPPING)
    note.received = received  # every signal from now on is one "again"
    handle_signals(note)


def wait_for_run(process: subprocess.Popen) -> int:
    """Wait for the run; on Ctrl-C or SIGTERM (:class:`~core.stopping.Stopped`) pass SIGINT on (the run saves
    ``last.ckpt`` at the next batch and exits), wait for it, then raise the ``Stopped`` on, for the worker to
    put the trial back in the queue."""
    try:
        return process.wait()
    except Stopped as stopped:
        hold_off_signals(stopped.signal)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
        raise


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
