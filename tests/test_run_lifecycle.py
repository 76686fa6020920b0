"""A run's life on disk, from the command line: where it writes (``--trainer.default_root_dir``), a
resume that goes on in the same folder and W&B run, a folder two runs cannot share, checkpoints a
full disk cannot truncate, and Ctrl+C before training leaving nothing behind (cli/run_folder.py,
cli/checkpoint_io.py)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, TINY_GAN_ARGS, run_cli
from tests.probes import signal_at_args

pytestmark = pytest.mark.slow  # every test here starts train.py in fresh processes

CONFIGS = ROOT / "configs"
RUN = "runs/gan_mnist/version_0"


def gan_args(data: Path, epochs: int = 2, *extra: str) -> list[str]:
    """The MNIST GAN, tiny, on synthetic MNIST: 3 batches an epoch, CSV and W&B offline."""
    return ["fit", "--config", str(CONFIGS / "gan_mnist.yaml"), "--data.init_args.data_dir", str(data), *TINY_GAN_ARGS,
            "--trainer.max_epochs", str(epochs), "--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks.num_samples", "64", "--trainer.callbacks.num_real", "64", *extra]  # fmt: skip


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def wandb_ids(runs: Path) -> set[str]:
    return {path.name.rsplit("-", 1)[1] for path in (runs / "wandb").glob("offline-run-*")}


def test_default_root_dir_moves_every_file_of_the_run_and_last_finds_it_there(synthetic_mnist, tmp_path):
    root = tmp_path / "scratch"
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(gan_args(synthetic_mnist, 1, "--trainer.default_root_dir", str(root)), cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    run = root / RUN
    assert {"metrics.csv", "config.yaml", "learning_curves.png", "final_metrics.json"} <= {path.name for path in run.iterdir()}
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "samples").is_dir()
    assert len(wandb_ids(root / "runs")) == 1
    assert not any(work.iterdir()), "a file was written outside the root"
    again = run_cli(gan_args(synthetic_mnist, 2, "--trainer.default_root_dir", str(root), "--ckpt_path", "last"), cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 1
    without_logger = run_cli(
        gan_args(synthetic_mnist, 1, "--trainer.default_root_dir", str(root), "--trainer.logger", "false"), cwd=work
    )
    assert without_logger.returncode == 0, without_logger.stderr[-3000:]
    assert (root / "runs/gan_mnist/version_1/checkpoints/last.ckpt").is_file() and not any(work.iterdir())


def test_a_resume_goes_on_in_the_same_folder_and_w_and_b_run_with_continuous_metrics(synthetic_mnist, tmp_path):
    probe = signal_at_args(1, 1, "SIGINT")
    stopped = run_cli(gan_args(synthetic_mnist, 3, "--trainer.log_every_n_steps", "1", *probe), cwd=tmp_path)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    rows_before = list(csv.DictReader((tmp_path / RUN / "metrics.csv").open()))
    resumed = run_cli(
        gan_args(synthetic_mnist, 3, "--trainer.log_every_n_steps", "1", "--ckpt_path", f"{RUN}/checkpoints/last.ckpt"),
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dirpath" not in resumed.stderr and "exists and is not empty" not in resumed.stderr, [
        line for line in resumed.stderr.splitlines() if "dirpath" in line or "not empty" in line
    ]
    assert sorted(path.name for path in (tmp_path / "runs/gan_mnist").iterdir()) == ["version_0"]
    assert len(wandb_ids(tmp_path / "runs")) == 1 and len(list((tmp_path / "runs/wandb").glob("offline-run-*"))) == 2
    rows = list(csv.DictReader((tmp_path / RUN / "metrics.csv").open()))
    assert rows[: len(rows_before)] == [{**row, **{k: "" for k in rows[0].keys() - row.keys()}} for row in rows_before]
    per_step = [int(row["step"]) for row in rows if row.get("train/d_loss_step")]
    assert per_step == list(range(3 * 3)), "every training batch logged once, in order"
    assert torch.load(tmp_path / RUN / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 2


def test_a_second_run_on_a_folder_in_use_is_refused_and_the_first_goes_on(synthetic_mnist, tmp_path):
    first = run_cli(gan_args(synthetic_mnist, 1, "--trainer.logger", str(CONFIGS / "logger/csv.yaml")), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    release = tmp_path / "release"
    resume = [
        *gan_args(synthetic_mnist, 2, "--trainer.logger", str(CONFIGS / "logger/csv.yaml")),
        "--ckpt_path",
        f"{RUN}/checkpoints/last.ckpt",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    pause = [
        "--trainer.callbacks+=tests.probes.PauseAt",
        "--trainer.callbacks.epoch",
        "1",
        "--trainer.callbacks.batch",
        "1",
        "--trainer.callbacks.release",
        str(release),
    ]
    writing = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *resume, *pause], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(1200):
            if Path(f"{release}.paused").exists() or writing.poll() is not None:
                break
            time.sleep(0.1)
        assert writing.poll() is None, writing.stderr.read()[-3000:]
        before = sorted((tmp_path / RUN).rglob("*"))
        second = run_cli(resume, cwd=tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
        assert last_line(second) == (
            f"genlab: error: {RUN} is in use by another run (process {writing.pid}): "
            f"wait for it to end, or stop it (kill -INT {writing.pid}), then resume."
        )
        assert sorted((tmp_path / RUN).rglob("*")) == before
    finally:
        release.touch()
        _, stderr = writing.communicate(timeout=300)
    assert writing.returncode == 0, stderr[-3000:]
    assert torch.load(tmp_path / RUN / "checkpoints/last.ckpt", weights_only=False)["epoch"] == 1


@pytest.mark.parametrize("failing_save", [1, 2], ids=["first save", "a later save"])
def test_a_disk_that_fills_during_a_checkpoint_leaves_no_partial_file_and_the_earlier_checkpoint(
    failing_save, synthetic_mnist, tmp_path
):
    full_disk = ["--trainer.plugins", "tests.probes.DiskFullAfter", "--trainer.plugins.init_args.failing_save", str(failing_save)]
    result = run_cli(gan_args(synthetic_mnist, 2, "--trainer.logger", str(CONFIGS / "logger/csv.yaml"), *full_disk), cwd=tmp_path)
    checkpoints = tmp_path / RUN / "checkpoints"
    failed = f"{RUN}/checkpoints/epoch={failing_save - 1}-step={6 * failing_save}.ckpt"
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result).startswith(
        f"genlab: error: could not write the checkpoint {failed}: No space left on device. Nothing was half-written"
    )
    assert sorted(path.name for path in checkpoints.iterdir()) == (
        [] if failing_save == 1 else ["epoch=0-step=6.ckpt", "last.ckpt"]
    )
    if failing_save == 2:
        assert "the earlier checkpoints (epoch=0-step=6.ckpt, last.ckpt) are intact" in last_line(result)
        assert os.readlink(checkpoints / "last.ckpt") == "epoch=0-step=6.ckpt"
        assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 6


def test_ctrl_c_while_the_libraries_load_ends_in_one_line_and_writes_nothing(tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(CONFIGS / "gan_mnist.yaml")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # importing torch and lightning takes several seconds
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "genlab: error: stopped by SIGINT before training started; nothing was written."
    assert not any(tmp_path.iterdir())


def test_ctrl_c_after_the_run_folder_is_claimed_but_before_training_removes_what_it_wrote(synthetic_mnist, tmp_path):
    result = run_cli(
        gan_args(synthetic_mnist, 1, "--trainer.callbacks+=tests.probes.SignalIn", "--trainer.callbacks.hook", "setup"),
        cwd=tmp_path,
    )
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result) == "genlab: error: stopped by SIGINT before training started; nothing was written."
    assert not (tmp_path / RUN).exists() and not list((tmp_path / "runs").glob("wandb/offline-run-*"))


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_during_the_final_measurements_stops_at_once_and_keeps_the_checkpoint(name, code, synthetic_mnist, tmp_path):
    probe = [
        "--trainer.callbacks+=tests.probes.SignalIn",
        "--trainer.callbacks.hook",
        "on_train_end",
        "--trainer.callbacks.name",
        name,
    ]
    result = run_cli(gan_args(synthetic_mnist, 1, *probe), cwd=tmp_path)
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert last_line(result) == (
        f"genlab: error: stopped by {name} after training, during the final measurements; "
        f"the trained weights are in {RUN}/checkpoints/."
    )
    assert torch.load(tmp_path / RUN / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6


def test_ctrl_c_pressed_again_while_last_ckpt_is_written_does_not_cut_it_short(synthetic_mnist, tmp_path):
    probe = signal_at_args(0, 1, "SIGINT")
    impatient = ["--trainer.plugins", "tests.probes.CtrlCDuringSave"]
    result = run_cli(
        gan_args(synthetic_mnist, 2, "--trainer.logger", str(CONFIGS / "logger/csv.yaml"), *probe, *impatient), cwd=tmp_path
    )
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("genlab: SIGINT again: finishing the batch and writing checkpoints/last.ckpt first") == 2
    assert last_line(result).startswith(
        f"genlab: stopped by SIGINT at epoch 0, step 4; saved {RUN}/checkpoints/last.ckpt. Resume: "
    )
    assert torch.load(tmp_path / RUN / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4
