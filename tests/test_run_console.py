"""What a run says on the console: its first line and time estimate, its progress bar, its closing
summary, and the commands it prints (they must run as printed)."""

from __future__ import annotations

import csv
import re
import shlex
import sys
from functools import partial
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.progress_bar import GenlabProgressBar
from callbacks.run_forecast import RunForecast
from callbacks.run_summary import RunSummary
from core import commands
from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules import GAN
from tests.conftest import TINY_GAN

TINY = partial(GAN, **TINY_GAN)


def mnist(data_root: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=32, val_size=0)


def said(capsys) -> list[str]:
    return [line.removeprefix("genlab: ") for line in capsys.readouterr().out.splitlines() if line.startswith("genlab: ")]


def test_the_forecast_names_the_folder_then_times_the_first_batches_and_counts_those_left(synthetic_mnist, fit_tiny, capsys):
    forecast = RunForecast(timed_batches=3, warmup_batches=1)
    trainer, _ = fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=2, limit_train_batches=8, callbacks=[forecast])
    first, estimate = said(capsys)
    folder = Path(trainer.default_root_dir)
    assert first == f"{folder.parent.name}: training in {folder}/ — to epoch 2 (8 batches each)."
    # 4 of 2 x 8 batches done when the 3 timed ones end: 12 left.
    assert re.fullmatch(
        r"[0-9.]+ ms per batch: 12 batches left, about \d+ s of training \(until about \d\d:\d\d\), plus the measurements\.",
        estimate,
    )


def test_the_forecast_stops_at_max_steps_when_they_end_the_run_first(synthetic_mnist, fit_tiny, capsys):
    forecast = RunForecast(timed_batches=2, warmup_batches=0)
    fit_tiny(TINY, mnist(synthetic_mnist), max_epochs=5, max_steps=20, limit_train_batches=8, callbacks=[forecast])
    # A GAN batch takes 2 optimizer steps (D, G): after 2 batches, (20 - 4) / 2 = 8 batches left, not 5 x 8 - 2.
    assert " ms per batch: 8 batches left" in said(capsys)[1]


@pytest.mark.parametrize("settings", [{"timed_batches": 0}, {"warmup_batches": -1}])
def test_a_forecast_with_no_batches_to_time_is_refused(settings):
    with pytest.raises(ConfigError, match="RunForecast: timed_batches must be >= 1"):
        RunForecast(**settings)


def test_the_bar_shows_epoch_of_epochs_the_run_the_optimizer_step_and_the_losses(synthetic_mnist, fit_tiny):
    bar = GenlabProgressBar()
    trainer, model = fit_tiny(
        TINY,
        mnist(synthetic_mnist),
        max_epochs=2,
        limit_train_batches=4,
        log_every_n_steps=1,
        enable_progress_bar=True,
        callbacks=[bar],
    )
    assert bar.train_progress_bar.desc == "Epoch 2/2: "
    shown = bar.get_metrics(trainer, model)
    assert shown["run"] == Path(trainer.default_root_dir).name and shown["step"] == 16
    assert set(shown) == {"run", "step", "d_loss", "g_loss"}  # the loggers' step values are not repeated there


def test_the_summary_lists_the_outputs_and_a_command_that_trains_further(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "gan_mnist" / "version_3"
    (folder / "samples").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    for name in ("samples/epoch_001.png", "samples/epoch_008.png", "learning_curves.png", "metrics.csv", ".genlab.lock"):
        (folder / name).write_text("x")
    summary = RunSummary(["fit", "--config", "configs/gan_mnist.yaml", "--trainer.max_epochs", "8", "--ckpt_path", "old.ckpt"])
    summary.folder = folder
    assert summary.outputs() == [
        "checkpoints/last.ckpt",
        "learning_curves.png",
        "metrics.csv",
        "samples/ (2 PNG: epoch_001.png … epoch_008.png)",
    ]
    monkeypatch.setattr(commands, "python_command", lambda: "python")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    trainer = type("Trainer", (), {"max_epochs": 8, "max_steps": -1})()
    assert summary.further_command(trainer) == (
        f"python train.py fit --config configs/gan_mnist.yaml --trainer.max_epochs 16 --ckpt_path {folder}/checkpoints/last.ckpt"
    )


@pytest.mark.parametrize("fast_dev_run", [False, True])
def test_a_smoke_run_prints_no_command_to_train_further(fast_dev_run, synthetic_mnist, fit_tiny, capsys):
    summary = RunSummary(["fit", "--config", "configs/gan_mnist.yaml"])
    checkpoints = ModelCheckpoint(save_last=True)
    fit_tiny(
        TINY,
        mnist(synthetic_mnist),
        limit_train_batches=2,
        fast_dev_run=fast_dev_run,
        enable_checkpointing=True,
        callbacks=[summary, checkpoints],
    )
    said = capsys.readouterr().out
    assert "genlab: outputs in " in said
    assert ("train further: " in said) is not fast_dev_run


def test_python_is_printed_only_where_it_is_this_interpreter(tmp_path, monkeypatch):
    venv = tmp_path / "project" / ".venv" / "bin"
    venv.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv / "python3"))
    monkeypatch.setattr(commands.shutil, "which", lambda name: str(venv / "python"))  # the environment is active
    assert commands.python_command() == "python"
    monkeypatch.setattr(commands.shutil, "which", lambda name: "/usr/bin/python")  # it is not: name this one
    monkeypatch.chdir(tmp_path / "project")
    assert commands.python_command() == ".venv/bin/python3"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert commands.python_command() == str(venv / "python3")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "my env" / "python"))
    assert commands.python_command() == shlex.quote(str(tmp_path / "my env" / "python"))


def test_a_printed_command_quotes_what_a_shell_would_split(monkeypatch):
    monkeypatch.setattr(commands, "python_command", lambda: "python")
    monkeypatch.setattr(sys, "argv", ["/somewhere else/train.py"])
    assert (
        commands.script_command("train.py", ["fit", "--run_name", "a b"])
        == "python '/somewhere else/train.py' fit --run_name 'a b'"
    )
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert commands.script_command("train.py", ["fit"]) == "python train.py fit"
    assert commands.without_option(["a", "--ckpt_path", "x", "--ckpt_path=y", "b"], "--ckpt_path") == ["a", "b"]


def test_the_bar_says_when_its_unit_is_a_group_of_minibatches(synthetic_mnist, fit_tiny):
    bar = GenlabProgressBar()
    data = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, minibatches_per_step=4)
    trainer, _ = fit_tiny(TINY, data, max_epochs=1, enable_progress_bar=True, callbacks=[bar])
    assert bar.train_progress_bar.desc == "Epoch 1/1 (in groups of 4 minibatches): "
    assert bar.train_progress_bar.total == 2 and trainer.global_step == 16  # 8 minibatches, D and G steps each


def test_the_demo_is_three_short_epochs_with_a_grid_and_the_fid_after_each(real_mnist, tmp_path, monkeypatch, capsys):
    """``make demo``: 3 epochs of the half-width GAN with batch norm in G, a titled grid and a quality
    measurement after every epoch, and the summary at the end (here on 4 batches an epoch, 100 samples)."""
    from train import main

    monkeypatch.chdir(tmp_path)
    configs = Path(__file__).parents[1] / "configs"
    args = ["fit", "--config", str(configs / "gan_mnist_demo.yaml"), "--trainer.logger", str(configs / "logger/csv.yaml")]
    args += ["--data.init_args.data_dir", str(real_mnist), "--trainer.limit_train_batches", "4"]
    args += ["--trainer.callbacks.num_samples", "100", "--trainer.callbacks.num_real", "100"]
    cli = main(args)
    assert cli.trainer.max_epochs == 3 and cli.model.hparams.generator_batch_norm
    assert list(cli.model.hparams.generator_hidden) == [128, 256, 512]
    run = tmp_path / "runs" / "gan_mnist_demo" / "version_0"
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert sum(1 for row in rows if row["quality/fid"]) == 3  # after each epoch
    assert (run / "learning_curves.png").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert "gan_mnist_demo finished at epoch 3, step 24 (" in capsys.readouterr().out
