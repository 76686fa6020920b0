"""What the study database costs: study.py's worker loop with a no-op trial, on SQLite and on PostgreSQL.

    python benchmarks/study_storage.py                           # 1 worker x 200 trials, then 8 workers x 1,000, both databases
    python benchmarks/study_storage.py --workers 8 --trials 1000 --storage postgresql+psycopg://genlab@host/genlab

Each worker is a process running ``studies.queue.run_worker`` (the same loop as ``study.py run``: stale-trial check,
atomic pop of a waiting trial, duplicate check, parameters, user attributes, heartbeat, tell) with a
trial that trains nothing. Printed per database: trials per second, milliseconds of database work
per trial and worker, and the errors: worker exceptions, grid points done twice or never. Without
``--storage`` the PostgreSQL server is a throwaway one started here (needs the server binaries;
``initdb`` runs as the ``postgres`` user when we are root). docs/studies.md has the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna
from optuna.trial import TrialState

from core.stopping import handle_signals, raise_stopped
from studies.queue import open_study, run_worker
from studies.study_file import Objective, Study
from studies.trial import Outcome


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 in a temporary folder, removed on exit; yields its URL.
    ``initdb`` refuses root, so as root the server runs as the ``postgres`` system user."""
    bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="genlab-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    try:
        subprocess.run(
            [*as_postgres, bindir / "initdb", "-D", data, "-A", "trust", "-U", "genlab"], check=True, capture_output=True
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            [*as_postgres, bindir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://genlab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def no_training(study: Study, params: dict, *args) -> Outcome:
    return Outcome(TrialState.COMPLETE, {"objective": float(params["seed"])})


def worker(name: str, trials: int, storage: str, errors: multiprocessing.Queue) -> None:
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - one line per trial is not what we measure
    study = benchmark_study(name, trials)
    args = argparse.Namespace(storage=storage, heartbeat=60, grace=300, lock_timeout=60.0, threads=1)
    try:
        run_worker(study, args, train=no_training)
    except Exception as error:  # noqa: BLE001 - counted and reported, whatever it is
        errors.put(f"{type(error).__name__}: {error}")


def benchmark_study(name: str, trials: int) -> Study:
    """A grid of ``trials`` points (one config, seeds 0..trials-1) whose trials train nothing."""
    return Study(
        name=name,
        configs=["configs/gan_mnist.yaml"],
        seeds=list(range(trials)),
        objective=Objective("objective"),
        out=tempfile.gettempdir(),
    )


def measure(storage: str, workers: int, trials: int) -> dict:
    name = f"storage_benchmark_{workers}x{trials}_{time.time_ns()}"
    args = argparse.Namespace(storage=storage, heartbeat=60, grace=300)
    open_study(benchmark_study(name, trials), args.storage, args.heartbeat, args.grace)  # created and enqueued beforehand
    errors: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    processes = [
        multiprocessing.get_context("spawn").Process(target=worker, args=(name, trials, storage, errors)) for _ in range(workers)
    ]
    start = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - start
    done = [
        t
        for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
    ]
    counts = Counter(t.params["seed"] for t in done)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    return {
        "trials/s": len(done) / seconds, "ms per trial and worker": 1000 * seconds * workers / max(len(done), 1),
        "completed": len(done), "done twice": sum(n > 1 for n in counts.values()), "never done": trials - len(counts),
        "worker errors": failures,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--storage", nargs="+", help="SQLAlchemy URLs (default: a SQLite file here and a throwaway PostgreSQL server)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 8], help="worker processes of each measurement (default: 1 8)"
    )
    parser.add_argument(
        "--trials",
        type=int,
        nargs="+",
        default=[200, 1000],
        help="grid points of each measurement, one per --workers (default: 200 1000)",
    )
    args = parser.parse_args()
    handle_signals(raise_stopped)  # killed: the throwaway server is still removed
    with contextlib.ExitStack() as stack:
        if args.storage:
            storages = {url.split(":", 1)[0]: url for url in args.storage}
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            storages = {
                "SQLite (file)": f"sqlite:///{folder}/studies.db",
                "PostgreSQL 127.0.0.1": stack.enter_context(throwaway_postgres()),
            }
        print(
            "| database | workers | trials | trials/s | ms per trial per worker "
            "| completed | done twice | never done | worker errors |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for label, url in storages.items():
            for workers, trials in zip(args.workers, args.trials):
                r = measure(url, workers, trials)
                errors = "; ".join(r["worker errors"][:2]) or "0"
                print(
                    (
                        f"| {label} | {workers} | {trials} | {r['trials/s']:.1f} | {r['ms per trial and worker']:.0f} "
                        f"| {r['completed']} | {r['done twice']} | {r['never done']} | {errors} |"
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
