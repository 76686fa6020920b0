"""A study file (``configs/studies/*.yaml``): what each key may hold, checked before anything uses the file; the
search space (``log-uniform 1e-5..1e-3``, ...); the objective, an arithmetic expression over a run's metrics; and
the points (trials) of a grid with the run folder of each.

``callbacks.optuna_pruning`` reads the objective and builds the pruner from here, inside a ``train.py`` run: this
module imports only ``core/`` and third-party packages, so that a callback may import it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import itertools
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from core.errors import StudyError

ROOT = Path(__file__).resolve().parents[1]
#: The command line over this package: what a worker process runs, and what the commands a message suggests name.
STUDY_SCRIPT = ROOT / "study.py"
#: What ``callbacks.optuna_pruning.OptunaPruning`` leaves in the run folder when it stops a run;
#: the trial is then recorded as pruned.
PRUNED_FILE = "pruned.json"


@dataclass
class Objective:
    """What a trial is worth: an arithmetic expression over the keys of ``final_metrics.json``
    (``high_quality * modes / 8``), maximised or minimised."""

    value: str
    direction: str = "maximize"

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise StudyError(f"objective.direction must be maximize or minimize, got {self.direction!r}.")
        try:
            self.expression = ast.parse(str(self.value), mode="eval").body
        except SyntaxError:
            raise StudyError(f"objective: {self.value!r} is not an expression.") from None
        for node in ast.walk(self.expression):
            called = getattr(node, "func", None)
            if (
                not isinstance(node, ALLOWED_NODES)
                or (isinstance(node, ast.Call) and getattr(called, "id", None) not in FUNCTIONS)
                or (isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)))
            ):
                raise StudyError(
                    f"objective: {ast.unparse(node)!r} is not allowed (numbers, metric names, + - * /, min, max, log)."
                )

    def names(self) -> set[str]:
        return {node.id for node in ast.walk(self.expression) if isinstance(node, ast.Name)} - set(FUNCTIONS)

    def __call__(self, metrics: dict[str, float]) -> float:
        missing = self.names() - set(metrics)
        if missing:
            raise KeyError(f"the objective needs {', '.join(sorted(missing))}, which the run did not report")
        return float(evaluate(self.expression, metrics))


OPERATORS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}
FUNCTIONS: dict[str, Callable] = {"min": min, "max": max, "log": math.log}
ALLOWED_NODES = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.Call, ast.Load, *OPERATORS)


def evaluate(node: ast.AST, names: dict[str, float]) -> float:
    """Numbers, metric names, + - * /, min, max, log (checked when the objective is read)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.BinOp):
        return OPERATORS[type(node.op)](evaluate(node.left, names), evaluate(node.right, names))
    if isinstance(node, ast.UnaryOp):
        return OPERATORS[type(node.op)](evaluate(node.operand, names))
    return FUNCTIONS[node.func.id](*(evaluate(arg, names) for arg in node.args))


SPACE_FORMS = {
    r"log-uniform (\S+)\.\.(\S+)": lambda low, high: FloatDistribution(float(low), float(high), log=True),
    r"uniform (\S+)\.\.(\S+)": lambda low, high: FloatDistribution(float(low), float(high)),
    r"int (\S+)\.\.(\S+)": lambda low, high: IntDistribution(int(low), int(high)),
    r"log-int (\S+)\.\.(\S+)": lambda low, high: IntDistribution(int(low), int(high), log=True),
    r"choice (.+)": lambda choices: CategoricalDistribution([yaml.safe_load(c.strip()) for c in choices.split(",")]),
}


def distribution(key: str, text: str) -> optuna.distributions.BaseDistribution:
    """``log-uniform 1e-5..1e-3``, ``uniform 0..1``, ``int 1..10``, ``log-int 1..64``, ``choice a, b, c``."""
    for pattern, make in SPACE_FORMS.items():
        if match := re.fullmatch(pattern, str(text).strip()):
            try:
                return make(*match.groups())
            except ValueError as error:
                raise StudyError(f"search.space.{key}: {text!r}: {error}.") from None
    raise StudyError(
        f"search.space.{key}: {text!r} is not one of: log-uniform A..B, uniform A..B, int A..B, log-int A..B, choice X, Y, Z."
    )


def instantiate(spec: dict | None, default: Any) -> Any:
    """An Optuna sampler or pruner from ``{class_path: optuna.samplers.TPESampler, init_args: {...}}``."""
    if spec is None:
        return default
    module, _, name = spec["class_path"].rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise StudyError(f"{spec['class_path']}: {error}.") from None


@dataclass
class Search:
    """A search over config keys: ``space`` maps a train.py key to a distribution; ``trials`` is the
    budget (trials not failed); ``report`` is the metric prefix the pruner watches during a run
    (``eval/``: the run's periodic evaluation logs ``eval/<name>``)."""

    space: dict[str, str]
    trials: int
    sampler: dict | None = None
    pruner: dict | None = None
    report: str = "eval/"

    def __post_init__(self) -> None:
        self.distributions = {key: distribution(key, text) for key, text in self.space.items()}


@dataclass
class Study:
    """A study file: see the package docstring (``studies``) and ``configs/studies/``."""

    name: str
    configs: list[str]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid: dict[str, list] = field(default_factory=dict)
    train_args: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=lambda: ["wall_seconds"])
    figure: list[str] = field(default_factory=list)
    curves: list[str] = field(default_factory=list)
    objective: Objective | None = None
    search: Search | None = None
    out: str | None = None
    command: list[str] = field(default_factory=lambda: ["train.py", "fit"])
    #: A grid's seeds of one variant trained as one population (``--model.init_args.seeds``), one trial per seed still.
    population: bool = False
    #: A grid table's ``±``: ``std`` over seeds, or ``sem``, the standard error of the mean (PacGAN's Table 1).
    spread: str = "std"
    file: Path | None = field(default=None, init=False, repr=False)  # where it was read from (Study.load)

    @classmethod
    def load(cls, path: Path) -> Study:
        if not path.is_file():
            raise StudyError(f"no such study file: {path} (the studies are in configs/studies/).")
        try:
            spec = yaml.safe_load(path.read_bytes())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise StudyError(
                f"{path}: not valid YAML ({where}{getattr(error, 'problem', None) or str(error).splitlines()[0]}): "
                "correct it there."
            ) from None
        spec = {} if spec is None else spec
        check_section(path, "", spec, STUDY_KEYS, required=("configs",))
        for key, values in (spec.get("grid") or {}).items():
            check_value(path, f"grid.{key}", values, *GRID_VALUES)
        for section, schema, required in (
            ("objective", OBJECTIVE_KEYS, ("value",)),
            ("search", SEARCH_KEYS, ("space", "trials")),
        ):
            if spec.get(section) is not None:
                check_section(path, f"{section}.", spec[section], schema, required)
        spec.setdefault("name", path.stem)
        if spec.get("objective") is not None:
            spec["objective"] = Objective(**spec["objective"])
        if spec.get("search") is not None:
            spec["search"] = Search(**spec["search"])
        study = cls(**spec)
        if study.population and study.search is not None:
            raise StudyError(
                f"{path}: population: true trains a grid's seeds together; a search samples its trials one by one: "
                "remove one of the two."
            )
        missing = [config for config in study.configs if not (ROOT / config).is_file()]
        if missing:
            raise StudyError(f"{path}: no such config: {', '.join(missing)}.")
        if study.objective is None:  # the dashboard plots each trial's value: the table's first metric
            study.objective = Objective(study.metrics[0].removesuffix(":%"))
        study.file = path
        return study

    @property
    def folder(self) -> Path:
        return ROOT / (self.out or f"runs/studies/{self.name}")

    def variants(self) -> list[tuple[str, dict[str, Any]]]:
        """The table's rows: each config, times each combination of the ``grid`` keys' values."""
        combos = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        return [
            (label_of({"config": config, **combo}), {"config": config, **combo}) for config in self.configs for combo in combos
        ]

    def points(self) -> list[dict[str, Any]]:
        """The grid: every variant and seed, in table order."""
        return [{**variant, "seed": seed} for _, variant in self.variants() for seed in self.seeds]

    def run_dir(self, params: dict[str, Any]) -> Path:
        """``OUT/<config>/seed_<s>``; with grid keys ``OUT/<config>/<key>_<value>/seed_<s>``; a search's
        trial ``OUT/<config>/<hash of its sampled values>/seed_<s>``."""
        config = Path(params["config"]).stem
        keys = {key: value for key, value in params.items() if key not in ("config", "seed")}
        if not keys:
            return self.folder / config / f"seed_{params['seed']}"
        if self.search is None:
            return (
                self.folder
                / config
                / "-".join(f"{short_key(key)}_{value}" for key, value in keys.items())
                / f"seed_{params['seed']}"
            )
        digest = hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:10]
        return self.folder / config / digest / f"seed_{params['seed']}"

    def population_dir(self, params: dict[str, Any], seeds: list[int]) -> Path:
        """The run folder of a variant's ``seeds`` trained as one population: ``seeds_0_1_2`` beside the seeds'
        own folders, each of which becomes a link to its member's folder in it (``seeds_0_1_2/member_<p>``)."""
        return self.run_dir({**params, "seed": 0}).with_name("seeds_" + "_".join(map(str, seeds)))


def short_key(key: str) -> str:
    """``model.init_args.code_size`` -> ``code_size``: a config key as folder names and tables show it."""
    return key.rsplit(".", 1)[-1]


def label_of(params: dict[str, Any]) -> str:
    """``gan_mnist``, ``ae_mnist code_size=32``: a config's name and its keys' values (not the seed)."""
    keys = [
        f"{short_key(key)}={value:.3g}" if isinstance(value, float) else f"{short_key(key)}={value}"
        for key, value in params.items()
        if key not in ("config", "seed")
    ]
    return " ".join([Path(str(params.get("config", "?"))).stem, *keys])


def is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def listing(item: Callable[[Any], bool], empty: bool = False, distinct: bool = False) -> Callable[[Any], bool]:
    """A list of items: not empty unless ``empty``; without repeats if ``distinct`` (a repeated seed or config would
    enqueue its points twice)."""
    return lambda value: (
        isinstance(value, list) and (empty or bool(value)) and all(map(item, value))
        and (not distinct or len({json.dumps(v, default=str) for v in value}) == len(value))
    )  # fmt: skip


def is_plugin(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and is_text(value.get("class_path"))
        and set(value) <= {"class_path", "init_args"}
        and isinstance(value.get("init_args", {}), dict)
    )


#: What each key of a study file must hold, and how the error shows what is expected: checked before anything
#: uses the file, since the database records the study's definition as the file gives it.
STUDY_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (is_text, "a name, e.g. wgan_ring8"),
    "configs": (
        listing(is_text, distinct=True),
        "a non-empty list of distinct config files, e.g. [configs/wgan_ring8_spectral_norm.yaml]",
    ),
    "seeds": (listing(is_int, distinct=True), "a non-empty list of distinct integers, e.g. [0, 1, 2]"),
    "grid": (
        lambda value: isinstance(value, dict) and all(map(is_text, value)),
        "config keys, each with a list of values, e.g. {model.init_args.code_size: [2, 8, 32]}",
    ),
    "train_args": (
        listing(lambda value: isinstance(value, str), empty=True),
        'a list of train.py arguments, numbers quoted, e.g. [--trainer.max_steps, "400"]',
    ),
    "metrics": (listing(is_text), "a non-empty list of final_metrics.json keys, e.g. [modes, high_quality:%]"),
    "figure": (listing(is_text, empty=True), "a list of file patterns in a run folder, e.g. [landscape/iteration_*.png]"),
    "curves": (listing(is_text, empty=True), "a list of metrics.csv columns, e.g. [train/loss]"),
    "objective": (optional(lambda value: isinstance(value, dict)), "{value: EXPRESSION, direction: maximize or minimize}"),
    "search": (
        optional(lambda value: isinstance(value, dict)),
        "{space: {KEY: DISTRIBUTION}, trials: N, sampler: ..., pruner: ...}",
    ),
    "out": (optional(is_text), "a folder, e.g. runs/studies/NAME"),
    "command": (listing(is_text), "a non-empty list, e.g. [train.py, fit]"),
    "population": (lambda value: isinstance(value, bool), "true (each variant's seeds as one population) or false"),
    "spread": (lambda value: value in ("std", "sem"), "std (standard deviation over seeds) or sem (standard error of the mean)"),
}
GRID_VALUES = (
    listing(lambda value: value is None or isinstance(value, (str, int, float, bool)), distinct=True),
    "a non-empty list of distinct values (numbers, strings, true, false, null), e.g. [0.001, 0.0001]",
)
OBJECTIVE_KEYS = {
    "value": (is_text, "an expression over final_metrics.json keys, e.g. high_quality * modes / 8"),
    "direction": (lambda value: value in ("maximize", "minimize"), "maximize or minimize"),
}
SEARCH_KEYS = {
    "space": (
        lambda value: isinstance(value, dict) and bool(value) and all(map(is_text, value)),
        "a non-empty mapping of config keys to distributions, e.g. {model.init_args.lr_g: log-uniform 1e-5..1e-3}",
    ),
    "trials": (lambda value: is_int(value) and value >= 1, "an integer >= 1 (the budget)"),
    "sampler": (optional(is_plugin), "{class_path: optuna.samplers.TPESampler, init_args: {...}}"),
    "pruner": (optional(is_plugin), "{class_path: optuna.pruners.MedianPruner, init_args: {...}}"),
    "report": (is_text, "a metric prefix, e.g. eval/"),
}


def check_value(file: Path, key: str, value: Any, valid: Callable[[Any], bool], expected: str) -> None:
    if not valid(value):
        raise StudyError(f"{file}: {key}: got {json.dumps(value, default=str)}; expected {expected}.")


def check_section(
    file: Path, prefix: str, spec: Any, schema: dict[str, tuple[Callable[[Any], bool], str]], required: tuple[str, ...]
) -> None:
    """The study file, or its ``objective:`` or ``search:``: a mapping of known keys, each holding what it must."""
    if not isinstance(spec, dict):
        raise StudyError(f"{file}: got {json.dumps(spec, default=str)}; expected a mapping of study keys ({', '.join(schema)}).")
    unknown = sorted(str(key) for key in spec if key not in schema)
    if unknown:
        raise StudyError(f"{file}: unknown keys {', '.join(prefix + key for key in unknown)} (known: {', '.join(schema)}).")
    missing = [key for key in required if key not in spec]
    if missing:
        raise StudyError(f"{file}: {prefix}{missing[0]} is missing; expected {schema[missing[0]][1]}.")
    for key, value in spec.items():
        check_value(file, prefix + key, value, *schema[key])
