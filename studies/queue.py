"""The queue of a study's trials and the workers that empty it: the study created (its grid enqueued once) or
loaded, the waiting trials claimed one at a time (an atomic WAITING -> RUNNING), a dead worker's trial failed
after ``--grace`` and re-queued, a grid's failed points retried by a rerun, a search's budget, and the worker
loop (:func:`run_worker`; :func:`run_workers` starts one process each for ``--workers N`` or ``--gpus``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

from core.stopping import Stopped
from studies.storage import (
    DATABASE_ERRORS,
    LOCK_TIMEOUT,
    check_definition,
    check_owner,
    check_writable,
    connect,
    definition_of,
    pruner_of,
    sampler_of,
)
from studies.study_file import ROOT, STUDY_SCRIPT, Study, label_of
from studies.trial import Outcome, hold_off_signals, log_of, run_population, run_trial

#: A worker's exit code when Ctrl-C or SIGTERM stopped it, as a shell reports a process that SIGINT ended.
STOPPED_EXIT = 130


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
        created = optuna.create_study(
            study_name=study.name, storage=storage, direction=direction, sampler=sampler_of(study), pruner=pruner_of(study)
        )
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

    def pop_same_variant(self, params: dict[str, Any]) -> list[optuna.Trial]:
        """Claim every waiting trial of ``params``' variant (its config and grid values, any seed): the seeds a
        population trains with it (``population: true``)."""
        variant = {key: value for key, value in params.items() if key != "seed"}
        claimed = []
        for frozen in self.optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            fixed = frozen.system_attrs.get("fixed_params", {})
            if {key: value for key, value in fixed.items() if key != "seed"} != variant:
                continue
            trial_id = trial_id_of(self.storage, self.optuna_study, frozen.number)
            try:
                if self.storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    claimed.append(optuna.Trial(self.optuna_study, trial_id))
            except UpdateFinishedTrialError:
                continue
        return claimed


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


def run_worker(
    study: Study,
    args: argparse.Namespace,
    gpu: int | None = None,
    label: str = "worker",
    train: Callable[..., Outcome] = run_trial,
    train_together: Callable[..., list[Outcome]] = run_population,
) -> int:
    """One worker: run trials until none waits (a search: until its budget is spent), each with ``train`` (a
    train.py process; benchmarks/study_storage.py passes a no-op), or with ``population: true`` the waiting seeds
    of a variant together with ``train_together`` (one process). Returns the exit code: 0 if every trial run here
    completed or was pruned, 1 if one failed, 130 (:data:`STOPPED_EXIT`) if stopped."""
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
        group = [(trial, params)]
        if study.population:
            group += [(companion, suggest(study, companion)) for companion in queue.pop_same_variant(params)]
            group.sort(key=lambda entry: study.seeds.index(entry[1]["seed"]))
        names = [mark_started(study, member, member_params, gpu) for member, member_params in group]
        together = f" (one population of {len(group)})" if len(group) > 1 else ""
        print(f"[{label}] {', '.join(names)}: started{together}", flush=True)
        try:
            with contextlib.ExitStack() as beating:
                for member, _ in group:
                    beating.enter_context(Heartbeat(storage, trial_id_of(storage, optuna_study, member.number), args.heartbeat))
                if len(group) == 1 and not study.population:
                    outcomes = [train(study, params, args.storage, trial.number, args.threads, gpu)]
                else:
                    points, numbers = [entry[1] for entry in group], [entry[0].number for entry in group]
                    outcomes = train_together(study, points, args.storage, numbers, args.threads, gpu)
        except Stopped as stopped:  # while its run trained, before it started or after it ended
            hold_off_signals(stopped.signal)
            for member, _ in group:  # a population's members go back together
                member.set_user_attr("reason", "interrupted (Ctrl-C or SIGTERM); re-queued, resumes from its last.ckpt")
                RetryHeartbeatStaleTrialCallback()(optuna_study, optuna_study.tell(member, state=TrialState.FAIL))
            print(f"[{label}] {', '.join(names)}: interrupted; the trial is back in the queue", flush=True)
            return STOPPED_EXIT
        for (member, member_params), outcome, name in zip(group, outcomes, names):
            failed += record_outcome(study, optuna_study, member, study.run_dir(member_params), outcome, f"[{label}] {name}")
    running = len(optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if running:
        print(
            f"[{label}] nothing waits; {running} trial(s) still running in other workers "
            f"(should one of them have died, its trial is re-queued {args.grace} s after its last heartbeat: run again then)"
        )
    return 1 if failed else 0


def mark_started(study: Study, trial: optuna.Trial, params: dict[str, Any], gpu: int | None) -> str:
    """Record where the trial runs (its run folder, this worker); its name for the console."""
    run_dir = study.run_dir(params)
    trial.set_user_attr("run_dir", str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}" + (f":gpu{gpu}" if gpu is not None else ""))
    return f"{label_of(params)} seed {params['seed']}" + (f" (trial {trial.number})" if study.search else "")


def record_outcome(study: Study, optuna_study: optuna.Study, trial: optuna.Trial, run_dir, outcome: Outcome, name: str) -> bool:
    """Tell the database the trial's outcome and say it; whether it failed."""
    trial.set_user_attr("metrics", outcome.metrics)
    trial.set_user_attr("reason", outcome.reason)  # also over a retried trial's copy of the earlier reason
    if outcome.state == TrialState.COMPLETE:
        optuna_study.tell(trial, outcome.metrics["objective"])
        print(f"{name}: done, {study.objective.value} = {outcome.metrics['objective']:.4g}", flush=True)
        return False
    optuna_study.tell(trial, state=outcome.state)
    where = f"; log: {log_of(run_dir)}" if outcome.state == TrialState.FAIL else ""
    print(f"{name}: {outcome.state.name.lower()} ({outcome.reason}){where}", flush=True)
    return outcome.state == TrialState.FAIL


def run_workers(study: Study, args: argparse.Namespace) -> int:
    """``study.py run``: one worker here; with ``--workers N`` or several ``--gpus``, one worker process each."""
    check_owner(study, args.storage)  # before the database: a study refused here is not created there
    check_writable(study)
    slots = args.gpus or [None] * args.workers
    if len(slots) == 1:
        return run_worker(study, args, slots[0], label=f"gpu {slots[0]}" if slots[0] is not None else "worker")
    common = [
        "--storage",
        args.storage,
        "--threads",
        str(args.threads),
        "--heartbeat",
        str(args.heartbeat),
        "--grace",
        str(args.grace),
        "--lock-timeout",
        str(args.lock_timeout),
    ]
    workers = []
    for slot in slots:
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(STUDY_SCRIPT),
                    "run",
                    str(args.study),
                    *common,
                    *(["--gpus", str(slot)] if slot is not None else []),
                ]
            )
        )
        time.sleep(1.0)  # the first creates the study and enqueues its grid
    return max(worker.wait() for worker in workers)
