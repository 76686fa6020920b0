"""The fault battery (tests/fault_battery.py): what a new (or careless) user gets wrong, and what genlab answers.

Every fault ends with exit code 2 (a signal: 128 + its number) and stderr's last line
``genlab: error: ...`` naming the key or file and the fix, with no traceback, and leaves every file
already on disk as it was. Most cases run ``train.main`` in this process (seconds each); signals
run ``train.py`` as a subprocess, as a user would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from core.commands import python_command
from tests.conftest import ROOT, TINY_GAN_ARGS, run_cli, snapshot, write_synthetic_mnist
from tests.fault_battery import FAULTS
from tests.probes import signal_at_args

CONFIGS = ROOT / "configs"
TINY = TINY_GAN_ARGS
#: One short epoch, CSV only, small sample-quality sets: a run of a second or two.
QUICK = [
    "--trainer.max_epochs",
    "1",
    "--trainer.limit_train_batches",
    "2",
    "--trainer.logger",
    str(CONFIGS / "logger/csv.yaml"),
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
SMALL_QUALITY = ["--trainer.callbacks.num_samples", "64", "--trainer.callbacks.num_real", "64"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory holding one finished tiny MNIST GAN run (``runs/trained``) and broken
    checkpoint files, for the faults to run against."""
    ws = tmp_path_factory.mktemp("workspace")
    write_synthetic_mnist(ws / "trained_data")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ws)
        train.main(
            [
                "fit",
                "--config",
                str(CONFIGS / "gan_mnist.yaml"),
                "--run_name",
                "trained",
                "--data.init_args.data_dir",
                str(ws / "trained_data"),
                *TINY,
                *QUICK,
                *SMALL_QUALITY,
            ]
        )
    (ws / "empty.ckpt").touch()
    shutil.copytree(ws / "runs/trained/version_0", ws / "runs/dangling/version_0", symlinks=True)
    (ws / "runs/dangling/version_0/checkpoints/last.ckpt").unlink()
    (ws / "runs/dangling/version_0/checkpoints/last.ckpt").symlink_to("epoch=9-step=99.ckpt")
    (ws / "broken.yaml").write_text("max_epochs: [1, 2\n")
    (ws / "binary.yaml").write_bytes(bytes([0x1F, 0x8B, 0x08, 0x00]) * 50)  # a gzip header: a compressed file passed as a config
    (ws / "latin1.yaml").write_bytes("max_epochs: 2  # réglage d'été\n".encode("latin-1"))
    (ws / "garbage.ckpt").write_bytes(b"\x80\x03garbage" * 100)
    shutil.copy(ROOT / "pretrained/lenet_mnist.pt", ws / "lenet.pt")
    return ws


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_fault_ends_in_one_line_naming_the_fix_and_changes_nothing(fault, workspace, tmp_path, monkeypatch, capsys, request):
    data_dir = tmp_path / "data"
    if fault.data is not None:
        fault.data(data_dir)
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no W&B login
    checkpoint = workspace / "runs/trained/version_0/checkpoints/last.ckpt"
    args = [arg.replace("{ws}", str(workspace)).replace("{ckpt}", str(checkpoint)) for arg in fault.args]
    data = ["--data.init_args.data_dir", str(data_dir)] if fault.data is not None else []
    if "{locked}" in " ".join(args):
        args = [arg.replace("{locked}", str(request.getfixturevalue("locked_folder"))) for arg in args]
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_:
        train.main(
            [fault.subcommand, "--config", str(CONFIGS / f"{fault.config}.yaml"), *data, *gan_sizes(fault.config), *QUICK, *args]
        )
    stderr = capsys.readouterr().err
    last_line = stderr.strip().splitlines()[-1]
    assert exit_.value.code == fault.code, stderr
    assert last_line.startswith("genlab: error: ") and fault.message.replace("{ws}", str(workspace)) in last_line, stderr
    assert "Traceback" not in stderr
    after = snapshot(workspace)
    assert {path: digest for path, digest in after.items() if path in before} == before, (
        "a file already on disk was changed or removed"
    )


def gan_sizes(config: str) -> list[str]:
    """Tiny networks and small sample-quality sets for the image GANs: the faults, not the training, are tested."""
    return [*TINY, *SMALL_QUALITY] if config.startswith(("gan_", "cgan_")) else []


def test_resuming_applies_trainer_changes_and_last_takes_the_newest_run(workspace, tmp_path, monkeypatch, capsys):
    """The safe override on resume (``max_epochs``) is applied, not dropped; ``--ckpt_path last``
    finds the run's newest checkpoint and goes on in its folder, also with no logger."""
    shutil.copytree(workspace, tmp_path / "ws", symlinks=True)  # the workspace's run stays as the faults expect it
    monkeypatch.chdir(tmp_path / "ws")
    args = [
        "fit",
        "--config",
        str(CONFIGS / "gan_mnist.yaml"),
        "--run_name",
        "trained",
        "--data.init_args.data_dir",
        str(workspace / "trained_data"),
        *TINY,
        *QUICK,
        *SMALL_QUALITY,
    ]
    train.main([*args, "--trainer.max_epochs", "2", "--ckpt_path", "last", "--trainer.logger", "false"])
    resumed = torch.load("runs/trained/version_0/checkpoints/last.ckpt", weights_only=False)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * 2 * 2  # two epochs of 2 batches, a D and a G step each
    assert sorted(path.name for path in Path("runs/trained").iterdir()) == ["version_0"]
    assert sorted(path.name for path in Path(".").iterdir()) == sorted(path.name for path in workspace.iterdir())


@pytest.mark.slow  # starts train.py and signals it
@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_a_resumable_checkpoint_exits_non_zero_and_says_how_to_resume(name, code, synthetic_mnist, tmp_path):
    args = [
        "fit",
        "--config",
        str(CONFIGS / "gan_mnist.yaml"),
        "--data.init_args.data_dir",
        str(synthetic_mnist),
        *TINY,
        *QUICK,
        *SMALL_QUALITY,
        "--trainer.max_epochs",
        "3",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.enable_progress_bar",
        "true",
    ]
    probe = signal_at_args(1, 1, name)
    stopped = run_cli([*args, *probe], cwd=tmp_path)
    checkpoint = Path("runs/gan_mnist/version_0/checkpoints/last.ckpt")
    assert stopped.returncode == code, stopped.stderr
    python = "python" if python_command() == "python" else sys.executable  # train.py runs in tmp_path: not relative
    resume = f"{python} {ROOT / 'train.py'} {shlex.join([*args, *probe])} --ckpt_path {checkpoint}"
    assert stopped.stderr.strip().splitlines()[-1] == (  # the batch under way when the signal came is finished: 3 + 2 batches
        f"genlab: stopped by {name} at epoch 1, step 10; saved {checkpoint}. Resume: {resume}"
    )
    assert "Traceback" not in stopped.stderr
    assert not (tmp_path / checkpoint).is_symlink() and torch.load(tmp_path / checkpoint, weights_only=False)["global_step"] == 10
    assert (tmp_path / "runs/gan_mnist/version_0/checkpoints/epoch=0-step=6.ckpt").is_file()  # the epoch checkpoint is kept
    # The printed command, typed as printed in a shell (no PYTHONPATH), resumes the run.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"WANDB_SILENT": "true"}
    resumed = subprocess.run(resume, shell=True, cwd=tmp_path, capture_output=True, text=True, env=environment, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(tmp_path / checkpoint, weights_only=False)["global_step"] == 3 * 3 * 2  # went on in version_0
    # The bar of the resumed epoch keeps its epoch, total and run (Lightning's counted on from batch 2 of "?").
    bar = resumed.stdout.replace("\r", "\n")
    epochs = [line for line in bar.splitlines() if line.startswith("Epoch ")]
    assert all("/3 [" in line for line in epochs) and any(line.startswith("Epoch 2/3: 100%|██████████| 3/3 [") for line in epochs)
    assert "run=version_0, step=12" in bar
