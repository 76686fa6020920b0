"""genlab's studies: every comparison is an Optuna study in a database, run by any number of workers.

    python study.py run configs/studies/wgan_ring8.yaml                 # a worker: runs trials until none waits
    python study.py run wgan_ring8 --workers 2                          # two workers on this machine's CPU
    python study.py run configs/studies/wgan_ring8.yaml --gpus 0 1 2 3  # four workers, one per GPU
    python study.py run STUDY --storage postgresql://genlab@db-host/genlab   # from every machine of the study
    python study.py table configs/studies/wgan_ring8.yaml               # table.md, side_by_side.png, curves.png
    python study.py status configs/studies/wgan_ring8.yaml              # what is done, running, waiting, failed

The command line only: what a study file holds, how workers share the database, what a fault does and how
each is reported are the package ``studies/`` (its docstring, and docs/studies.md).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import StudyError, fail
from core.stopping import Stopped, handle_signals, raise_stopped
from studies.queue import STOPPED_EXIT, run_workers
from studies.report import status, table
from studies.storage import DEFAULT_STORAGE, LOCK_TIMEOUT, database_errors
from studies.study_file import ROOT, Study

SUBCOMMANDS = {"run": run_workers, "table": table, "status": status}


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
        fail("study", f"{message} (python study.py --help shows the options).")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=tuple(SUBCOMMANDS))
    parser.add_argument("study", type=Path, help="a study file (configs/studies/NAME.yaml), or its NAME")
    parser.add_argument(
        "--storage",
        default=os.environ.get("GENLAB_STUDY_STORAGE", DEFAULT_STORAGE),
        help="SQLAlchemy URL of the study database (default: $GENLAB_STUDY_STORAGE or sqlite:///runs/studies.db)",
    )
    parser.add_argument(
        "--threads",
        type=at_least(int, 1),
        default=1,
        help="CPU threads per run (default 1: on a 2-core machine, run two workers)",
    )
    parser.add_argument("--workers", type=at_least(int, 1), default=1, help="worker processes on this machine's CPU (default 1)")
    parser.add_argument(
        "--gpus",
        nargs="+",
        type=at_least(int, 0),
        help="one worker per GPU index, instead of --workers (name one twice to run two runs on it)",
    )
    parser.add_argument(
        "--heartbeat", type=at_least(int, 1), default=60, help="seconds between a running trial's heartbeats (default 60)"
    )
    parser.add_argument(
        "--grace",
        type=at_least(int, 1),
        default=300,
        help="seconds without a heartbeat before a trial counts as dead and is re-queued (default 300)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=at_least(float, 0),
        default=LOCK_TIMEOUT,
        help=f"seconds to wait for a SQLite database that another process holds locked (default {LOCK_TIMEOUT:g})",
    )
    args = parser.parse_args(argv)
    if args.grace <= args.heartbeat:  # a live trial would count as dead between two heartbeats, and run twice
        parser.error(f"--grace {args.grace} must be longer than --heartbeat {args.heartbeat}")
    path = args.study if args.study.suffix else ROOT / "configs" / "studies" / f"{args.study}.yaml"
    # Ctrl-C, and a batch system's SIGTERM, raise Stopped: the run stops with last.ckpt and its trial is re-queued.
    # SIGINT too where the shell started the worker with it ignored (a `nohup ... &` job), so `kill -INT` always stops
    # it cleanly. For the life of the process: a worker that stops holds off later signals until it exits.
    handle_signals(raise_stopped)
    try:
        study = Study.load(path)
        with database_errors(args.storage, args.lock_timeout):
            return SUBCOMMANDS[args.action](study, args)
    except StudyError as error:
        fail("study", str(error))
    except Stopped:  # between trials: nothing was running, nothing to re-queue
        print("study: stopped", file=sys.stderr)
        return STOPPED_EXIT


if __name__ == "__main__":
    sys.exit(main())
