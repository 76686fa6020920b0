"""The commands genlab prints for the user to type next (resume a run, go on training it): written
so that they run as printed, from the folder the user is in.

``python`` is printed only where it is this interpreter (the environment is active); otherwise the
interpreter's own path (``.venv/bin/python`` after ``make train``), since a ``python`` outside the
environment has no Lightning. The script is named as it was started (``train.py``, or the absolute
path a test or another folder used).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path


def python_command() -> str:
    """How to call this interpreter from the working folder: ``python`` when that name finds it (same
    ``bin`` folder: the virtual environment is active), else its path, relative when inside the folder."""
    executable = Path(sys.executable)
    on_path = shutil.which("python")
    if on_path is not None and Path(os.path.abspath(on_path)).parent == Path(os.path.abspath(executable)).parent:
        return "python"
    try:
        return shlex.quote(str(Path(os.path.abspath(executable)).relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(os.path.abspath(executable))


def script_command(script: str, args: Sequence[str]) -> str:
    """``<python> <script> <args>``, quoted for a POSIX shell. ``script`` is the default name
    (``train.py``); the one this process was started as is used when it is that script."""
    started_as = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == script else script
    return " ".join([python_command(), shlex.quote(started_as), shlex.join(args)]).rstrip()


def without_option(args: Sequence[str], option: str) -> list[str]:
    """``args`` without ``option`` (given as one argument ``--opt=value`` or two)."""
    kept, rest = [], iter(args)
    for arg in rest:
        if arg == option:
            next(rest, None)  # and its value
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept
