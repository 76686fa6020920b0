"""Run experiment configs x seeds, then write one comparison table and one side-by-side figure.

Every run is ``python train.py fit --config CONFIG --seed_everything SEED [ARGS]`` in its own
process, logging (CSV only) to ``OUT/<config>/seed_<SEED>/``. A run reports its results through the
``final_metrics.json`` its metrics callback writes (e.g. :class:`callbacks.MixtureMetrics`); the
sweep adds the process's wall time and writes

- ``OUT/results.json``: every run's metrics;
- ``OUT/table.md``: mean ± std over seeds per config (markdown, for docs);
- ``OUT/side_by_side.png``: per config, the last image matching each ``--figure`` glob of each seed;
- ``OUT/curves.png``: each ``--curves`` column of the runs' ``metrics.csv`` against epoch, per config
  (mean over seeds, their range shaded).

    python benchmarks/sweep.py --configs configs/wgan_ring8_*.yaml --seeds 0 1 2 --jobs 2 \\
        --metrics modes high_quality:% reverse_kl mmd2 wall_seconds --figure 'landscape/iteration_*.png' \\
        --out runs/sweeps/wgan_ring8

Runs whose ``final_metrics.json`` already exists are not run again, and an unfinished run with a
``checkpoints/last.ckpt`` continues from it (``--ckpt_path``), so an interrupted sweep resumes where
it stopped, across sessions; ``wall_seconds`` then adds up the run's segments that ended under the
sweep (one killed together with the sweep is not counted: say so where such a run is reported).
``--report`` trains nothing and writes the table and figures from what is there, unfinished runs'
curves included.
With ``--jobs N`` runs go N at a time, each limited to ``--threads`` CPU threads (on a 2-core
machine, 2 jobs x 1 thread keeps wall times comparable between runs). With ``--gpus 0 1 2 3`` they
go one per GPU instead (name a GPU twice to run two on it): each run sees only its GPU (``CUDA_VISIBLE_DEVICES``) and trains on it
(``--trainer.accelerator gpu --trainer.devices 1``, which ``-- ARGS`` may still override).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.plots import new_figure

#: What a run on one of ``--gpus`` adds to its command line (before the user's ``-- ARGS``).
GPU_ARGS = ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]


def run_one(config: Path, seed: int, out: Path, extra: list[str], threads: int, gpu: int | None = None) -> dict:
    run_dir = out / config.stem / f"seed_{seed}"
    results_path = run_dir / "final_metrics.json"
    if results_path.exists():
        return json.loads(results_path.read_text())
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out), "name": config.stem, "version": f"seed_{seed}"}}
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    resume = ["--ckpt_path", str(checkpoint)] if checkpoint.exists() else []
    if resume:
        print(f"  {config.stem} seed {seed}: resuming from {checkpoint}", flush=True)
    command = [
        sys.executable, str(ROOT / "train.py"), "fit", "--config", str(config), "--seed_everything", str(seed),
        "--trainer.logger", json.dumps(logger), "--trainer.enable_progress_bar", "false", *(GPU_ARGS if gpu is not None else []), *extra, *resume,
    ]
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": python_path, "WANDB_MODE": "disabled"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    wall = add_segment(run_dir, time.perf_counter() - start)
    with (run_dir / "train.log").open("a") as log:  # a resumed run's log continues the earlier segments'
        log.write(result.stdout + result.stderr)
    if result.returncode != 0 or not results_path.exists():
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        errors = [line for marker in ("genlab: error:", "error:") for line in reversed(lines) if marker in line.lower()]
        reason = (errors or lines[-1:])[0].strip()
        print(f"  {config.stem} seed {seed}: FAILED ({reason}); log: {run_dir / 'train.log'}", flush=True)
        return {"failed": reason, "wall_seconds": wall}
    metrics = json.loads(results_path.read_text()) | {"wall_seconds": wall}
    results_path.write_text(json.dumps(metrics, indent=2))
    print(f"  {config.stem} seed {seed}: done in {wall:.0f} s", flush=True)
    return metrics


def add_segment(run_dir: Path, seconds: float) -> float:
    """Record one process's wall time in ``run_dir/segments.json``; return the run's total so far."""
    path = run_dir / "segments.json"
    segments = [*json.loads(path.read_text()), seconds] if path.exists() else [seconds]
    path.write_text(json.dumps(segments))
    return sum(segments)


def mean_std(values: list[float], percent: bool) -> str:
    if not values:
        return "–"
    scale = 100.0 if percent else 1.0
    values = [v * scale for v in values]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    digits = 1 if percent or abs(mean) >= 10 else 3 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table(results: dict[str, list[dict]], metrics: list[str]) -> str:
    """Markdown: one row per config, ``mean ± std`` per metric (``name:%`` shows a fraction as %)."""
    names = [m.removesuffix(":%") for m in metrics]
    header = ["config", "runs", *[f"{n} (%)" if m.endswith(":%") else n for n, m in zip(names, metrics)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config, runs in results.items():
        ok = [r for r in runs if "failed" not in r]
        cells = [config, f"{len(ok)}/{len(runs)}"]
        for name, metric in zip(names, metrics):
            cells.append(mean_std([r[name] for r in ok if name in r and math.isfinite(r[name])], metric.endswith(":%")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def side_by_side(out: Path, configs: list[Path], seeds: list[int], patterns: list[str]) -> Path | None:
    """One column per config, one row per seed and pattern: the last file matching the pattern in each run."""
    from matplotlib.image import imread

    rows = [(seed, pattern) for seed in seeds for pattern in patterns]
    figure = new_figure(4 * len(configs), 3.6 * len(rows))
    found = False
    for row, (seed, pattern) in enumerate(rows):
        for column, config in enumerate(configs):
            axes = figure.add_subplot(len(rows), len(configs), row * len(configs) + column + 1)
            axes.set_axis_off()
            matches = sorted((out / config.stem / f"seed_{seed}").glob(pattern))
            if matches:
                axes.imshow(imread(matches[-1]))
                found = True
            name = f", {matches[-1].stem}" if matches and len(patterns) > 1 else ""
            axes.set_title(f"{config.stem}, seed {seed}{name}", fontsize=9)
    if not found:
        return None
    path = out / "side_by_side.png"
    figure.savefig(path, dpi=110)
    return path


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's CSVLogger files: those of earlier segments of a resumed run
    (``metrics_segment_<k>.csv``, kept by train.py) first, then ``metrics.csv``."""
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


def curves(out: Path, configs: list[Path], seeds: list[int], columns: list[str]) -> Path | None:
    """One panel per metrics.csv column, one line per config against epoch (``COLUMN:points``:
    against the count of logged values): the mean over seeds where every seed has a value, and the
    range of the seeds shaded."""
    figure = new_figure(5 * len(columns), 3.6)
    found = False
    for axes, spec in zip(figure.subplots(1, len(columns), squeeze=False)[0], columns):
        column, by_point = spec.removesuffix(":points"), spec.endswith(":points")
        for config in configs:
            read = read_points if by_point else read_curve
            runs = [dict(read(out / config.stem / f"seed_{seed}", column)) for seed in seeds]
            epochs = sorted(set.intersection(*(set(run) for run in runs)))
            if not epochs:
                continue
            values = [[run[epoch] for run in runs] for epoch in epochs]
            line = axes.plot(
                epochs, [statistics.mean(v) for v in values], marker=".", label=f"{config.stem} ({len(runs)} seeds)"
            )[0]
            axes.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.2)
            found = True
        axes.set(title=column, xlabel="logged value (in order)" if by_point else "epoch")
        plotted = [y for line in axes.get_lines() for y in line.get_ydata()]
        if plotted and min(plotted) > 0 and max(plotted) / min(plotted) > 20:  # FID falls by orders of magnitude
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    if not found:
        return None
    path = out / "curves.png"
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", type=Path, required=True, help="experiment configs to compare")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seed_everything of each run (default: 0 1 2)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs, table and figure")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["wall_seconds"],
        help="keys of final_metrics.json for the table; NAME:%% prints a fraction in %%",
    )
    parser.add_argument(
        "--figure", nargs="+", default=[], help="globs, in each run folder, of the images to put side by side (side_by_side.png)"
    )
    parser.add_argument(
        "--curves", nargs="+", default=[], help="metrics.csv columns to plot against epoch (COLUMN:points: against the count of its logged values), per config over seeds (curves.png)"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: table and figures from the runs already in --out, unfinished ones too",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument(
        "--gpus",
        nargs="+",
        type=int,
        default=None,
        help="GPU indices: one run per index at a time, an index named twice runs two on that GPU (replaces --jobs)",
    )
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: extra train.py arguments for every run")
    args = parser.parse_args()
    extra = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    missing = [str(c) for c in args.configs if not c.is_file()]
    if missing:
        parser.error(f"no such config: {', '.join(missing)}")

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(config.resolve(), seed) for config in args.configs for seed in args.seeds]
    free_gpus: queue.Queue[int] = queue.Queue()
    for gpu in args.gpus or []:
        free_gpus.put(gpu)

    def run(job: tuple[Path, int]) -> dict:
        if args.report:
            results_path = out / job[0].stem / f"seed_{job[1]}" / "final_metrics.json"
            return json.loads(results_path.read_text()) if results_path.exists() else {"failed": "unfinished"}
        if not args.gpus:
            return run_one(*job, out, extra, args.threads)
        gpu = free_gpus.get()
        try:
            return run_one(*job, out, extra, args.threads, gpu)
        finally:
            free_gpus.put(gpu)

    parallel = len(args.gpus) if args.gpus else args.jobs
    where = f"on GPUs {args.gpus}" if args.gpus else "on the CPU"
    if not args.report:
        print(
            f"sweep: {len(jobs)} runs ({len(args.configs)} configs x {len(args.seeds)} seeds), {parallel} at a time {where} -> {out}",
            flush=True,
        )
    with ThreadPoolExecutor(parallel) as pool:
        outcomes = list(pool.map(run, jobs))
    results: dict[str, list[dict]] = {}
    for (config, seed), metrics in zip(jobs, outcomes):
        results.setdefault(config.stem, []).append({"seed": seed, **metrics})
    (out / "results.json").write_text(json.dumps(results, indent=2))
    markdown = table(results, args.metrics)
    (out / "table.md").write_text(markdown)
    print(markdown)
    if args.figure and (figure := side_by_side(out, args.configs, args.seeds, args.figure)):
        print(f"figure: {figure}")
    if args.curves and (figure := curves(out, args.configs, args.seeds, args.curves)):
        print(f"figure: {figure}")
    failed = sum("failed" in r for runs in results.values() for r in runs)
    if failed and args.report:
        print(f"sweep: {failed} of {len(jobs)} runs unfinished; their curves go as far as they got")
    elif failed:
        sys.exit("sweep: some runs failed; see the train.log files named above")


if __name__ == "__main__":
    main()
