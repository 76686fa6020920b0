"""The layers point one way (docs/design.md, "Layers"): every import of a genlab module in a non-test
Python file goes down the table below, or stays in its own package; nothing imports train.py or study.py.

A module's layer is that of the longest prefix of its dotted name in :data:`LAYERS`; a module may
import modules of a lower layer, and modules with the same prefix (its own package).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Higher imports lower. Models and data are peers that never import each other: the CLI joins them.
LAYERS = {
    "train": 6,
    "study": 6,
    "benchmarks": 6,
    "studies": 5,
    "cli": 4,
    "callbacks": 3,
    "lightning_modules": 2,
    "lightning_modules.components": 1,
    "datamodules": 1,
    "studies.study_file": 1,  # the study-file schema, read by a search trial's callback (OptunaPruning)
    "core": 0,
}
ENTRY_SCRIPTS = {"train", "study"}
#: Packages that never import each other, whatever their layers.
PEERS = {("lightning_modules", "datamodules"), ("datamodules", "lightning_modules")}


def layer_key(module: str) -> str | None:
    """The longest prefix of ``module`` in :data:`LAYERS`."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every import statement in ``source``, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(importer: str, source: str) -> list[str]:
    """Each import in ``source`` (the module ``importer``) that goes up, sideways into another package
    of the same layer, or into an entry script."""
    own = layer_key(importer)
    bad = []
    for line, module in imported_modules(source):
        target = layer_key(module)
        if target is None or target == own:
            continue  # not genlab's, or within its own layer's package
        peers = own is not None and (own.split(".")[0], target.split(".")[0]) in PEERS
        if target in ENTRY_SCRIPTS or own is None or LAYERS[target] >= LAYERS[own] or peers:
            bad.append(
                f"{importer} (line {line}) imports {module}: "
                f"layer {own} ({LAYERS.get(own)}) may not import {target} ({LAYERS[target]})"
            )
    return bad


def project_files() -> list[Path]:
    return [
        path
        for path in sorted(ROOT.rglob("*.py"))
        if not {".venv", "tests", "runs", "wandb", "data", "build"} & set(path.relative_to(ROOT).parts)
    ]


def test_every_import_points_down_the_layers():
    found = [problem for path in project_files() for problem in violations(module_name(path), path.read_text())]
    assert not found, "\n".join(found)


def test_every_python_file_belongs_to_a_layer():
    assert [module_name(path) for path in project_files() if layer_key(module_name(path)) is None] == []


@pytest.mark.parametrize(
    ("importer", "source", "wrong"),
    [
        ("datamodules.mnist", "from lightning_modules.gan import GAN", True),  # data reads a model
        ("lightning_modules.gan", "import datamodules.mnist", True),  # a model imports data
        ("lightning_modules.components.losses", "from lightning_modules.gan import GAN", True),  # up
        ("callbacks.sample_grid", "def f():\n    from cli import run_folder", True),  # up, inside a function
        ("cli.export", "import train", True),  # an entry script
        ("core.errors", "from datamodules import MNISTDataModule", True),  # the bottom imports nothing
        ("callbacks.optuna_pruning", "from studies.study_file import Objective", False),
        ("callbacks.sample_grid", "from callbacks.plots import new_figure", False),  # own package
        ("cli.run_end", "from callbacks.run_guards import SaveOnInterrupt", False),  # down
        ("lightning_modules.vae", "import torch", False),  # not genlab's
    ],
)
def test_the_layer_check_catches_an_import_that_goes_up(importer, source, wrong):
    assert bool(violations(importer, source)) == wrong


def test_the_design_diagram_names_every_package_and_module():
    """docs/design.md's diagram of the layers: every package it draws exists, and every module of the
    layered packages is in it, so that it cannot silently fall behind the code."""
    text = (ROOT / "docs" / "design.md").read_text()
    diagram = text.split("## Layers", 1)[1].split("```", 2)[1]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_./]*", diagram))
    packages = {word.rstrip("/") for word in words if word.endswith("/")}
    assert packages and all((ROOT / package).is_dir() for package in packages), packages
    modules = {
        path.stem
        for package in ("cli", "studies", "callbacks", "lightning_modules", "lightning_modules/components", "datamodules", "core")
        for path in (ROOT / package).glob("*.py")
        if path.stem != "__init__"
    }
    assert sorted(modules - {word.rstrip("/.") for word in words}) == []
