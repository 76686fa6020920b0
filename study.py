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

import sys

from core.errors import StudyError, fail
from core.stopping import Stopped, handle_signals, raise_stopped
from studies.options import parser_of
from studies.queue import STOPPED_EXIT, run_workers
from studies.report import status, table
from studies.storage import database_errors
from studies.study_file import ROOT, Study

SUBCOMMANDS = {"run": run_workers, "table": table, "status": status}


def main(argv: list[str] | None = None) -> int:
    parser = parser_of(__doc__.split("\n")[0], tuple(SUBCOMMANDS))
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
