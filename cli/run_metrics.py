"""A run's metrics files, written and read in this one module: ``metrics.csv``, the CSV logger's, kept across
the processes of a resumed run (:func:`continue_metrics`, through ``cli.run_folder.claim_for``) and read back
for a study's curves (:func:`read_curve`, :func:`read_points`), a population member's own
(:func:`write_member_metrics`); and ``<run>.segments.json`` beside a study's
run folder, the wall time of each of its processes (:func:`add_segment`), whose sum the study records as
``wall_seconds``.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.pytorch.loggers import Logger


def continue_metrics(loggers: list[Logger], steps_done: int) -> None:
    """A run resumed in its own folder: its CSV loggers keep ``metrics.csv``'s rows logged before the
    checkpoint's step (``steps_done``, its batches that stepped) and append after them (Lightning's
    CSV writer would delete the file). Rows at or past that step were logged after the checkpoint was
    written (a run killed later): the resumed run logs those steps again."""
    from lightning.pytorch.loggers import CSVLogger  # here: study.py reads the files without loading Lightning

    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        metrics = Path(logger.log_dir) / "metrics.csv"
        header, rows = [], []
        if metrics.is_file():
            with metrics.open(newline="") as file:
                reader = csv.DictReader(file)
                header = list(reader.fieldnames or [])
                rows = [row for row in reader if row.get("step", "").isdigit() and int(row["step"]) < steps_done]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
            writer = logger.experiment  # creates the writer, which removes the file it finds
        if header:
            with metrics.open("w", newline="") as file:
                csv_writer = csv.DictWriter(file, fieldnames=header)
                csv_writer.writeheader()
                csv_writer.writerows(rows)
            writer.metrics_keys = header  # appended rows keep the columns; new ones rewrite the header


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's CSVLogger files: ``metrics.csv``, after those of earlier segments of a run
    resumed before 2026-12-01 (``metrics_segment_<k>.csv``; train.py now keeps one continuous file)."""
    segments = sorted(run_dir.glob("metrics_segment_*.csv"), key=lambda path: int(path.stem.rsplit("_", 1)[1]))
    return [row for path in [*segments, run_dir / "metrics.csv"] if path.exists() for row in csv.DictReader(path.open())]


def read_curve(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """``(epochs completed, value)`` of every row of the run's metrics that holds ``column`` (where a
    resumed run logged an epoch twice, the later value comes later). A row logged outside
    ``self.log`` (e.g. the quality metrics) may lack the epoch: it takes the epoch of the rows at the
    same step."""
    rows = metrics_rows(run_dir)
    epoch_at_step = {row["step"]: int(row["epoch"]) for row in rows if row.get("epoch")}
    return [
        (epoch_at_step[row["step"]] + 1, float(row[column]))
        for row in rows
        if row.get(column) and (row.get("epoch") or row["step"] in epoch_at_step)
    ]


def read_points(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """``(n, value)`` of the n-th logged value of ``column`` in the run: for a metric logged several
    times an epoch, such as the classifier's running loss (every 2,000 minibatches)."""
    return list(enumerate((float(row[column]) for row in metrics_rows(run_dir) if row.get(column)), start=1))


def write_member_metrics(population_dir: Path, member: int) -> Path:
    """``member_<p>/metrics.csv`` from a population's ``metrics.csv``: its ``<name>/member_<p>`` columns as ``<name>``
    and the columns every member shares (step, epoch), so that member p's curves read as its run alone's."""
    rows = metrics_rows(population_dir)
    header = list(rows[0]) if rows else []
    suffix = f"/member_{member}"
    columns = {
        column: column.removesuffix(suffix)
        for column in header
        if column.endswith(suffix) or ("/member_" not in column and f"{column}{suffix}" not in header)
    }
    path = population_dir / f"member_{member}" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns.values()))
        writer.writeheader()
        for row in rows:
            kept = {name: row[column] for column, name in columns.items() if row.get(column)}
            if set(kept) - {"step", "epoch"}:
                writer.writerow(kept)
    return path


def segments_file(run_dir: Path) -> Path:
    """``<run>.segments.json``, beside the run folder: a list of seconds, one per process of the run."""
    return run_dir.with_name(f"{run_dir.name}.segments.json")


def segments_of(run_dir: Path) -> list[float]:
    """The wall time of each process of the run so far (none before its first ended)."""
    path = segments_file(run_dir)
    return json.loads(path.read_text()) if path.exists() else []


def add_segment(run_dir: Path, seconds: float) -> float:
    """Record one process's wall time in ``<run>.segments.json``; return the run's total so far."""
    segments = [*segments_of(run_dir), seconds]
    segments_file(run_dir).write_text(json.dumps(segments))
    return sum(segments)
