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

from cli.run_metrics import add_segment
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
