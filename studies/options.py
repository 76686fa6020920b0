"""The options of ``study.py``: each checked as it is parsed, a bad one refused in one line."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import fail
from studies.storage import DEFAULT_STORAGE, LOCK_TIMEOUT


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


def parser_of(description: str, actions: tuple[str, ...]) -> Parser:
    parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=actions)
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
    return parser
