"""Fit each given experiment for two steps (``--trainer.fast_dev_run 2``) through ``train.main``, one
after another in this one process, each in its own working folder: every experiment's whole CLI
path for the price of one interpreter start (the imports alone take ~6 s a process).

    python -m tests.fast_dev_runs SPEC_JSON RESULTS_JSON

SPEC_JSON lists ``{"config": path, "args": [extra train.py arguments], "cwd": folder}``; RESULTS_JSON
gets, per config, its exit status and, when it failed, the traceback or error line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

from train import main


def fit(config: str, args: list[str], cwd: str) -> dict:
    Path(cwd).mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            main(["fit", "--config", config, "--trainer.fast_dev_run", "2", *args])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        return {"exit": code, "output": errors.getvalue()[-6000:]}
    except BaseException:  # noqa: BLE001 - every failure is reported, with its config, to the test
        return {"exit": 1, "output": errors.getvalue()[-3000:] + traceback.format_exc()[-6000:]}
    return {"exit": 0, "output": ""}


if __name__ == "__main__":
    spec_path, results_path = sys.argv[1:]
    results = {run["config"]: fit(run["config"], run["args"], run["cwd"]) for run in json.loads(Path(spec_path).read_text())}
    Path(results_path).write_text(json.dumps(results, indent=2))
