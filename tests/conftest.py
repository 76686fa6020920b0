"""Shared fixtures: the real datasets (required in CI) and small synthetic ones in torchvision's format, the CLIs in
fresh processes, a throwaway PostgreSQL server, a folder nobody may write in, and the file hashes that prove a fault
changed nothing."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cifar10 import CIFAR10DataModule

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
REQUIRE_REAL_DATA = os.environ.get("GENLAB_REQUIRE_REAL_DATA") == "1" or os.environ.get("CI") == "true"


#: Small networks for in-process runs: seconds, not minutes, with the real modules' code paths.
TINY_GAN = {"latent_dim": 8, "generator_hidden": (16,), "discriminator_hidden": (16,)}
#: The same as command-line options of train.py.
TINY_GAN_ARGS = [
    arg
    for key, value in TINY_GAN.items()
    for arg in (f"--model.init_args.{key}", str(list(value)) if isinstance(value, tuple) else str(value))
]
TINY_CGAN = {**TINY_GAN, "label_embedding_dim": 4}
SMALL_WGAN = {"generator_hidden": (16,), "critic_hidden": (16,)}


#: The theory checks (tests/test_theory_*.py) compute in float64 with their own seeded generators.
F64 = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


@pytest.fixture
def make_trainer(tmp_path: Path):
    """A factory of quiet in-process CPU Trainers rooted in ``tmp_path``: no logger, checkpoints,
    progress bar or model summary unless a test asks for them with a keyword."""

    def make(**overrides) -> L.Trainer:
        quiet = {
            "accelerator": "cpu",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        }
        return L.Trainer(**{**quiet, "default_root_dir": tmp_path, **overrides})

    return make


@pytest.fixture
def fit_tiny(make_trainer):
    """Seed, build the model, fit it with a ``make_trainer`` Trainer (its keywords pass through) and return
    ``(trainer, model)``. The model comes as a factory (a class or a partial) so that it is built after the
    seed: the same seed starts from the same weights."""

    def fit(
        model: Callable[[], L.LightningModule],
        datamodule: L.LightningDataModule,
        seed: int = 0,
        max_epochs: int = 1,
        ckpt_path: Path | None = None,
        **trainer_options,
    ) -> tuple[L.Trainer, L.LightningModule]:
        L.seed_everything(seed, verbose=False)
        module = model()
        trainer = make_trainer(max_epochs=max_epochs, **trainer_options)
        trainer.fit(module, datamodule, ckpt_path=ckpt_path)
        return trainer, module

    return fit


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file, the format of MNIST's raw files (big-endian header)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.contiguous().numpy().tobytes())


def write_synthetic_mnist(root: Path, folder: str = "MNIST", num_train: int = 256, num_test: int = 64) -> Path:
    """A tiny MNIST-format dataset: random 28x28 images, labels 0..9, in ``root/<folder>/raw``."""
    generator = torch.Generator().manual_seed(0)
    raw = root / folder / "raw"
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(
            raw / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)
        )
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(count, dtype=torch.uint8) % 10)
    return root


def cifar_tree(root: Path, per_class: int = 2) -> Path:
    """A tiny CIFAR-10 image tree (the layout of ../shared/data's JPEG copy)."""
    for split in ("train", "test"):
        for name in CIFAR10DataModule.class_names:
            folder = root / CIFAR10DataModule.image_folder_name / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                Image.fromarray(np.full((32, 32, 3), index * 40, dtype=np.uint8)).save(folder / f"{index:04d}.png")
    return root / CIFAR10DataModule.image_folder_name


@pytest.fixture
def synthetic_mnist(tmp_path: Path) -> Path:
    return write_synthetic_mnist(tmp_path / "data")


def require_real(relative: str) -> Path:
    """The real data root if ``data/<relative>`` exists; else fail in CI, skip elsewhere."""
    if (DATA_DIR / relative).exists():
        return DATA_DIR
    message = f"real data missing: {DATA_DIR / relative}. Run `make data` (unpacks ../shared/data) or see README."
    if REQUIRE_REAL_DATA:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def real_mnist() -> Path:
    return require_real("MNIST/raw/train-images-idx3-ubyte")


@pytest.fixture
def real_fashion_mnist() -> Path:
    return require_real("FashionMNIST/raw/train-images-idx3-ubyte")


@pytest.fixture
def real_cifar10_images() -> Path:
    return require_real("CIFAR-10-images/test")


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", **(env or {})},
        check=False,
    )


def study_cli(action: str, study: Path, storage: str, *extra: str) -> subprocess.CompletedProcess:
    """``python study.py ACTION STUDY --storage URL ...`` in a fresh process, no stdin."""
    command = [sys.executable, str(ROOT / "study.py"), action, str(study), "--storage", storage, *extra]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a throwaway PostgreSQL server on 127.0.0.1 (benchmarks/study_storage.py's), removed at the end;
    without the server's binaries: a failure in CI, a skip elsewhere."""
    try:
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        bindir = None
    if bindir is None or not (bindir / "initdb").exists():
        message = "no PostgreSQL server binaries here (pg_config --bindir has no initdb); install postgresql to run this test"
        pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
    from benchmarks.study_storage import throwaway_postgres

    with throwaway_postgres() as url:
        yield url


def fresh_database(server: str, name: str) -> str:
    """A new, empty database ``name`` on ``server``, and its URL."""
    import psycopg

    with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.rsplit("/", 1)[0] + f"/{name}"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (symlinks not followed) -> a hash of its bytes: what a fault must leave as it was."""
    return {
        str(path.relative_to(folder)): digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.fixture
def locked_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder nobody may create files in, even root (whom permission bits do not stop, and tests may run as root):
    immutable (``chattr +i``); where the file system refuses that, read-only for a user other than root, and for root
    a folder where ``os.makedirs`` fails in this process as it would."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    real_makedirs = os.makedirs

    def makedirs(name, *args, **kwargs):
        if str(name).startswith(str(folder)):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(name))
        return real_makedirs(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    yield folder
