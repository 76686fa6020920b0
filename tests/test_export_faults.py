"""Faults of the export: the wrong file given to ``python -m cli.export``, a stored file that cannot
be written, and an ``ExportClassifier.path`` that would overwrite a file. Each ends with exit code 2
and one last stderr line ``genlab: error: ...`` naming the file and the fix, without a traceback, and
leaves the stored networks under ``pretrained/`` byte for byte as they were.

The commands run in a copy of the code, whose ``pretrained/`` is what they would
write: no test here can touch the real stored networks (which every test also checks)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from callbacks import export as export_callback
from core.errors import ConfigError
from tests.conftest import ROOT, write_synthetic_mnist
from tests.test_classifier import SMALL_CLASSIFIER, classifier_data

PRETRAINED = Path("pretrained")
#: What the commands and train.py import, copied with the stored networks.
CODE = ("train.py", "callbacks", "cli", "core", "datamodules", "lightning_modules", "configs", "pretrained")
#: One batch of each: the files have the real layout, the training is not what is tested.
TINY = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--data.init_args.val_size", "64"]  # fmt: skip
#: The disk fills while the stored file is written (at the flush to disk), and any export earns promotion.
FULL_DISK = """
import errno, os, sys
def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = full
from cli import export
export.TARGET_ACCURACY["mnist"] = 0.0
export.main(sys.argv[1:])
"""


def digests(folder: Path) -> dict[str, str]:
    """Every file of a folder (temporary ones too) and a hash of its bytes."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture(autouse=True)
def real_pretrained_unchanged():
    before = digests(ROOT / PRETRAINED)
    yield
    assert digests(ROOT / PRETRAINED) == before, "a test changed the real pretrained/"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the code with its stored networks, where the commands run."""
    copy = tmp_path / "repo"
    for part in CODE:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy2(source, copy / part)
    return copy


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """What train.py writes for a one-batch classifier run (export, checkpoints) and a one-batch VAE
    run (checkpoints), on a small synthetic MNIST in ``data/``."""
    root = tmp_path_factory.mktemp("runs")
    data = write_synthetic_mnist(root / "data")
    common = ["--data.init_args.data_dir", str(data), "--trainer.default_root_dir", str(root), *TINY]
    train.main(["fit", "--config", str(ROOT / "configs/classifier_mnist.yaml"), *common])
    checkpoint = '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": "link"}}]'
    train.main(["fit", "--config", str(ROOT / "configs/vae_mnist.yaml"), *common, "--trainer.callbacks", checkpoint])
    (root / "random.pt").write_bytes(
        torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes()
    )
    return root


CLASSIFIER = "runs/classifier_mnist/version_0"
VAE = "runs/vae_mnist/version_0"


def run_python(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the copy, as a user would run it."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_export(repo: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m cli.export ARGS`` in the copy, as a user would run it (``code``: instead of ``-m``)."""
    return run_python(repo, *(["-m", "cli.export"] if code is None else ["-c", code]), *args)


def assert_user_error(code: int, stderr: str, *expected: str) -> None:
    last_line = stderr.strip().splitlines()[-1]
    assert code == 2, stderr
    assert last_line.startswith("genlab: error: ") and all(part in last_line for part in expected), last_line
    assert "Traceback" not in stderr and "found in sys.modules" not in stderr, stderr  # no runpy warning either


@pytest.mark.slow  # python -m cli.export in a fresh process, as a user runs it
@pytest.mark.parametrize(
    "command, file, expected",
    [
        (
            "promote",
            "random.pt",
            "is not a file torch.save wrote with tensors and plain values only: give an export of callbacks.ExportClassifier",
        ),
        (
            "promote",
            f"{CLASSIFIER}/checkpoints/last.ckpt",
            (
                "is a Lightning checkpoint, not an export of callbacks.ExportClassifier: "
                f"promote {{runs}}/{CLASSIFIER}/lenet_mnist.pt."
            ),
        ),
        (
            "promote",
            "{repo}/pretrained/vae_encoder_mnist.pt",
            "is a VAE encoder (what `python -m cli.export encoder` stores), not an export of callbacks.ExportClassifier",
        ),
        ("promote", f"{CLASSIFIER}/lenet_mnist.pt", "test accuracy"),  # a good one-line error, with exit code 2 now
        ("encoder", "random.pt", "is not a file torch.save wrote: give a checkpoint of a VAE run"),
        (
            "encoder",
            "{repo}/pretrained/lenet_mnist.pt",
            "is a network's export (what ExportClassifier or this command writes), not a Lightning checkpoint",
        ),
    ],
)
def test_the_wrong_file_for_the_export_command_is_one_line_naming_it(command, file, expected, runs, repo):
    before = digests(repo / PRETRAINED)
    path = file.format(repo=repo) if file.startswith("{repo}") else str(runs / file)
    result = (
        run_export(repo, command, path, "--data-dir", str(runs / "data"))
        if command == "promote"
        else run_export(repo, command, path)
    )
    assert_user_error(result.returncode, result.stderr, path, expected.format(runs=runs))
    assert digests(repo / PRETRAINED) == before


@pytest.mark.slow  # the export command in a fresh process
@pytest.mark.parametrize(
    "command, file, stored",
    [
        ("promote", f"{CLASSIFIER}/lenet_mnist.pt", "lenet_mnist.pt"),
        ("encoder", f"{VAE}/checkpoints/last.ckpt", "vae_encoder_mnist.pt"),
    ],
)
def test_a_full_disk_while_storing_leaves_the_stored_file_as_it_was(command, file, stored, runs, repo):
    before = digests(repo / PRETRAINED)
    args = [command, str(runs / file), *(["--data-dir", str(runs / "data")] if command == "promote" else [])]
    result = run_export(repo, *args, code=FULL_DISK)
    assert_user_error(
        result.returncode,
        result.stderr,
        f"{repo / PRETRAINED / stored} cannot be written (No space left on device); it is as it was.",
    )
    assert digests(repo / PRETRAINED) == before  # no temporary file left either


@pytest.mark.slow  # starts train.py
def test_an_export_path_in_the_stored_classifiers_folder_is_refused_before_training(runs, repo, tmp_path):
    """The tester's run: ``ExportClassifier`` pointed at the stored classifier, in a 1-batch run."""
    stored = repo / PRETRAINED / "lenet_mnist.pt"
    before = digests(repo / PRETRAINED)
    callbacks = json.dumps([{"class_path": "callbacks.ExportClassifier", "init_args": {"path": str(stored)}}])
    args = [
        "fit",
        "--config",
        "configs/classifier_mnist.yaml",
        "--data.init_args.data_dir",
        str(runs / "data"),
        *TINY,
        "--trainer.callbacks",
        callbacks,
    ]
    result = run_python(repo, "train.py", *args)
    assert_user_error(
        result.returncode,
        result.stderr,
        f"ExportClassifier.path {stored} is inside {repo / PRETRAINED}, where only `python -m cli.export promote FILE` writes",
    )
    assert digests(repo / PRETRAINED) == before
    assert "max_epochs=1` reached" not in result.stderr + result.stdout  # refused before training


@pytest.mark.parametrize("fault", ["exists", "unwritable"])
def test_an_export_path_that_exists_or_cannot_be_written_is_refused_before_training(fault, runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.pt").write_bytes(b"someone's file")
    path = tmp_path / (
        "taken.pt" if fault == "exists" else "taken.pt/lenet_mnist.pt"
    )  # a folder that is a file: cannot be created, also by root
    callbacks = json.dumps([{"class_path": "callbacks.ExportClassifier", "init_args": {"path": str(path)}}])
    with pytest.raises(SystemExit) as stopped:
        train.main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/classifier_mnist.yaml"),
                "--data.init_args.data_dir",
                str(runs / "data"),
                *TINY,
                "--trainer.callbacks",
                callbacks,
            ]
        )
    expected = (
        "exists already, and an export never replaces a file"
        if fault == "exists"
        else (
            f"cannot write to {tmp_path / 'taken.pt'} (File exists): "
            "set ExportClassifier.path to a file in a folder you can write"
        )
    )
    assert_user_error(stopped.value.code, capsys.readouterr().err, f"ExportClassifier.path {path}", expected)
    assert (tmp_path / "taken.pt").read_bytes() == b"someone's file"


def test_a_run_folder_inside_the_stored_classifiers_folder_is_refused(runs, fit_tiny, tmp_path, monkeypatch):
    stored = tmp_path / "pretrained"
    shutil.copytree(ROOT / PRETRAINED, stored)
    before = digests(stored)
    monkeypatch.setattr(export_callback, "PRETRAINED_DIR", stored)
    with pytest.raises(
        ConfigError,
        match=(
            r"ExportClassifier's export .*lenet_mnist.pt is inside .*pretrained, where only .* "
            r"point the run elsewhere \(--trainer.default_root_dir\)"
        ),
    ):
        fit_tiny(
            SMALL_CLASSIFIER,
            classifier_data(runs / "data"),
            callbacks=[export_callback.ExportClassifier()],
            default_root_dir=stored,
        )
    assert digests(stored) == before


def test_the_write_probe_leaves_no_folder_behind(tmp_path):
    export_callback.probe_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
