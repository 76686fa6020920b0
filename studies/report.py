"""What a study shows (``study.py table`` and ``study.py status``), read from the database at any point of the
study: a grid's table (mean ± std over seeds), a search's (every completed trial, best first), the final
images side by side and the curves of ``metrics.csv`` (from the run folders), the trials not done."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cli.run_metrics import read_curve, read_points
from core.errors import StudyError
from studies.queue import point_of
from studies.storage import check_definition, check_owner, check_writable, connect, masked
from studies.study_file import STUDY_SCRIPT, Study, label_of, short_key


def load_for_reading(study: Study, args: argparse.Namespace) -> optuna.Study:
    """The study for ``table`` and ``status``: read only (a missing database stays missing), its file unchanged."""
    try:
        loaded = optuna.load_study(study_name=study.name, storage=connect(args.storage, args.lock_timeout, writing=False))
    except KeyError:
        start = shlex.join(["python", os.path.relpath(STUDY_SCRIPT), "run", str(args.study), "--storage", masked(args.storage)])
        raise StudyError(f"no study {study.name!r} in {masked(args.storage)}: start it with `{start}`.") from None
    check_definition(study, loaded, args.storage)
    return loaded


def digits_for(value: float, percent: bool) -> int:
    """Decimals of a table cell: 1 for percentages and values >= 10, 3 below 1, else 2."""
    return 1 if percent or abs(value) >= 10 else 3 if abs(value) < 1 else 2


def format_value(value: float, percent: bool) -> str:
    value = value * 100.0 if percent else value
    return f"{value:.{digits_for(value, percent)}f}"


def mean_std(values: list[float], percent: bool, standard_error: bool = False) -> str:
    """``mean ± std`` of the values (the sample standard deviation), or with ``standard_error`` ``mean ± std / sqrt(n)``."""
    if not values:
        return "–"
    values = [v * 100.0 if percent else v for v in values]
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    spread = std / math.sqrt(len(values)) if standard_error else std
    digits = digits_for(mean, percent)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}"


def completed_by_point(optuna_study: optuna.Study) -> dict[tuple, dict[str, float]]:
    return {
        point_of(t): t.user_attrs.get("metrics", {})
        for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }


def grid_table(study: Study, optuna_study: optuna.Study) -> str:
    """Markdown: one row per config, ``mean ± std`` over its completed seeds, or ``mean ± standard error`` where the
    study file says ``spread: sem`` (``NAME:%``: a fraction in %)."""
    done = completed_by_point(optuna_study)
    names = [m.removesuffix(":%") for m in study.metrics]
    header = ["config", "runs", *[f"{n} (%)" if m.endswith(":%") else n for n, m in zip(names, study.metrics)]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, variant in study.variants():
        runs = [done[key] for seed in study.seeds if (key := tuple(sorted({**variant, "seed": seed}.items()))) in done]
        cells = [label, f"{len(runs)}/{len(study.seeds)}"]
        for name, metric in zip(names, study.metrics):
            values = [r[name] for r in runs if name in r and math.isfinite(r[name])]
            cells.append(mean_std(values, metric.endswith(":%"), standard_error=study.spread == "sem"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def search_table(study: Study, optuna_study: optuna.Study) -> str:
    """Markdown: every completed trial, best first: its sampled keys, objective and metrics."""
    trials = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials.sort(key=lambda t: t.value, reverse=study.objective.direction == "maximize")
    keys = list(study.search.distributions)
    names = [m.removesuffix(":%") for m in study.metrics]
    header = [
        "trial",
        *[short_key(key) for key in keys],
        study.objective.value,
        *[f"{n} (%)" if m.endswith(":%") else n for n, m in zip(names, study.metrics)],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in trials:
        metrics = t.user_attrs.get("metrics", {})
        cells = [
            str(t.number),
            *[f"{t.params[k]:.3g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys],
            f"{t.value:.4g}",
        ]
        cells += [format_value(metrics[n], m.endswith(":%")) if n in metrics else "–" for n, m in zip(names, study.metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    states = {state.name.lower(): len(optuna_study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    return (
        "\n".join(lines)
        + "\n\n"
        + ", ".join(f"{n} {s}" for s, n in states.items() if n)
        + f" of a budget of {study.search.trials}\n"
    )


def side_by_side(study: Study, patterns: list[str]) -> Path | None:
    """One column per config, one row per seed and pattern: the last file matching the pattern in each run."""
    from matplotlib.image import imread

    from callbacks.plots import new_figure

    rows, columns = [(seed, pattern) for seed in study.seeds for pattern in patterns], study.variants()
    figure = new_figure(4 * len(columns), 3.6 * len(rows))
    found = False
    for row, (seed, pattern) in enumerate(rows):
        for column, (label, variant) in enumerate(columns):
            axes = figure.add_subplot(len(rows), len(columns), row * len(columns) + column + 1)
            axes.set_axis_off()
            matches = sorted(study.run_dir({**variant, "seed": seed}).glob(pattern))
            if matches:
                axes.imshow(imread(matches[-1]))
                found = True
            name = f", {matches[-1].stem}" if matches and len(patterns) > 1 else ""
            axes.set_title(f"{label}, seed {seed}{name}", fontsize=9)
    if not found:
        return None
    path = study.folder / "side_by_side.png"
    figure.savefig(path, dpi=110)
    return path


def curves(study: Study, columns: list[str]) -> Path | None:
    """One panel per metrics.csv column, one line per config against epoch (``COLUMN:points``:
    against the count of logged values): the mean over seeds where every seed has a value, and the
    range of the seeds shaded. Unfinished runs' curves go as far as they got."""
    from callbacks.plots import new_figure

    figure = new_figure(5 * len(columns), 3.6)
    found = False
    for axes, spec in zip(figure.subplots(1, len(columns), squeeze=False)[0], columns):
        column, by_point = spec.removesuffix(":points"), spec.endswith(":points")
        for label, variant in study.variants():
            read = read_points if by_point else read_curve
            runs = [dict(read(study.run_dir({**variant, "seed": seed}), column)) for seed in study.seeds]
            epochs = sorted(set.intersection(*(set(run) for run in runs)))
            if not epochs:
                continue
            values = [[run[epoch] for run in runs] for epoch in epochs]
            line = axes.plot(epochs, [statistics.mean(v) for v in values], marker=".", label=f"{label} ({len(runs)} seeds)")[0]
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
    path = study.folder / "curves.png"
    figure.savefig(path, dpi=110)
    return path


def table(study: Study, args: argparse.Namespace) -> int:
    """``table.md`` (and the figures) from the database: at any point of a study, a partial one too."""
    check_owner(study, args.storage)
    optuna_study = load_for_reading(study, args)
    check_writable(study)
    markdown = search_table(study, optuna_study) if study.search else grid_table(study, optuna_study)
    (study.folder / "table.md").write_text(markdown)
    print(markdown, end="")
    print(f"table: {study.folder / 'table.md'}")
    if study.figure and not study.search and (figure := side_by_side(study, study.figure)):
        print(f"figure: {figure}")
    if study.curves and not study.search and (figure := curves(study, study.curves)):
        print(f"figure: {figure}")
    return 0


def status(study: Study, args: argparse.Namespace) -> int:
    """One line per trial that is not done: running (where), waiting, failed (why); then the counts."""
    optuna_study = load_for_reading(study, args)
    trials = optuna_study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.COMPLETE:
            continue
        params = t.system_attrs.get("fixed_params", t.params)
        where = {
            TrialState.RUNNING: t.user_attrs.get("worker", ""),
            TrialState.FAIL: t.user_attrs.get("reason", ""),
            TrialState.PRUNED: t.user_attrs.get("reason", ""),
        }
        print(
            f"trial {t.number:4d} {t.state.name.lower():8s} {label_of(params)} seed {params.get('seed', '?')}  "
            f"{where.get(t.state, '')}"
        )
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    total = study.search.trials if study.search else len(study.points())
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    print(f"{study.name}: {done}/{total} done; " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0
