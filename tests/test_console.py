"""What a run prints besides its results: a mistyped key gets the closest keys the CLI accepts, an error
names a key the way the user typed it, bf16 on a CPU that emulates it is warned of, and the library
warnings a user cannot act on are gone (cli/error_lines.py, cli/process_setup.py, cli/run_folder.py,
callbacks/cpu_precision.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import CSVLogger

import train
from callbacks import cpu_precision
from callbacks.cpu_precision import WarnOfEmulatedBf16, cpu_flags
from cli import run_folder
from cli.error_lines import as_typed
from cli.process_setup import silence_wandb_anonymous_notice
from core.errors import ConfigError
from tests.conftest import ROOT, TINY_GAN_ARGS, run_cli
from tests.probes import signal_at_args

CONFIGS = ROOT / "configs"
CSV_ONLY = ["--trainer.logger", str(CONFIGS / "logger/csv.yaml")]


def last_error_line(args: list[str], capsys) -> str:
    """The last stderr line of ``train.main(["fit", "--config", <gan_mnist.yaml>, *args])``, which must exit with 2."""
    with pytest.raises(SystemExit) as exit_:
        train.main(["fit", "--config", str(CONFIGS / "gan_mnist.yaml"), *CSV_ONLY, *args])
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (["--model.init_args.n_critc", "5"], "; did you mean --model.init_args.n_critic? "),
        (["--model.n_critc", "5"], "; did you mean --model.n_critic? "),  # the short spelling, kept
        (["--trainer.max_epoch", "3"], "; did you mean --trainer.max_epochs? "),
        (["--trainer.max_epoch=3"], "; did you mean --trainer.max_epochs? "),
        (["--data.init_args.batch_sise", "3"], "; did you mean --data.init_args.batch_size? "),
        (["--model.init_args.lr", "0.1"], "; did you mean --model.init_args.lr_g or --model.init_args.lr_d? "),
        (["--run_nam", "x"], "; did you mean --run_name? "),
    ],
    ids=["model key", "model key without init_args", "trainer key", "trainer key=value", "data key", "two as close", "top key"],
)
def test_a_mistyped_option_gets_the_closest_accepted_keys_in_one_line(args, suggestion, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = last_error_line(args, capsys)
    assert line.startswith("genlab: error: ") and suggestion in line, line


@pytest.mark.parametrize(
    "yaml, suggestion",
    [
        ("model:\n  init_args:\n    n_critc: 5\n", "; did you mean model.init_args.n_critic? "),
        ("trainer:\n  max_epoch: 3\n", "; did you mean trainer.max_epochs? "),
    ],
    ids=["model key", "trainer key"],
)
def test_a_mistyped_key_in_a_config_file_gets_the_closest_keys_as_a_file_names_them(
    yaml, suggestion, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.yaml").write_text(yaml)
    line = last_error_line(["--config", str(tmp_path / "typo.yaml")], capsys)
    assert suggestion in line, line


def test_a_key_nothing_resembles_gets_no_suggestion(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = last_error_line(["--model.init_args.zzzzqqq", "1"], capsys)
    assert "Option 'zzzzqqq' is not accepted" in line and "did you mean" not in line


@pytest.mark.parametrize(
    "option, key",
    [("--data.init_args.batch_size", "data.init_args.batch_size"), ("--data.batch_size", "data.batch_size")],
    ids=["with init_args", "without"],
)
def test_an_error_names_the_key_as_the_user_typed_it(option, key, tmp_path, monkeypatch, capsys):
    """The datamodule's __init__ says ``data.batch_size``; the line says what the user typed."""
    monkeypatch.chdir(tmp_path)
    line = last_error_line([option, "0", "--data.init_args.data_dir", str(tmp_path / "data"), *TINY_GAN_ARGS], capsys)
    assert line == f"genlab: error: {key} must be a positive integer, got 0."


def test_keys_are_respelt_both_ways_and_nothing_else_is_touched():
    typed = ["fit", "--config", "configs/gan_mnist.yaml", "--data.init_args.batch_size", "9", "--model.n_critic=3"]
    message = (
        "data.batch_size=9 is larger than the 8 samples; model.init_args.n_critic=3 (checkpoint: 1); "
        "see runs/x/data.batch_size.txt, lightning_modules.GAN, data.num_workers and --data.batch_size."
    )
    assert as_typed(message, typed) == (
        "data.init_args.batch_size=9 is larger than the 8 samples; model.n_critic=3 (checkpoint: 1); "
        "see runs/x/data.batch_size.txt, lightning_modules.GAN, data.num_workers and --data.init_args.batch_size."
    )


@pytest.fixture
def bf16_trainer(tmp_path) -> L.Trainer:
    return L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, default_root_dir=tmp_path)


@pytest.mark.parametrize(
    "flags, warned",
    [({"fpu", "avx2", "avx512f"}, True), ({"avx2", "avx512_bf16"}, False), ({"amx_bf16", "amx_tile"}, False), (None, False)],
    ids=["no bf16 unit", "AVX-512-BF16", "AMX", "flags unknown"],
)
def test_bf16_on_a_cpu_without_a_bf16_unit_is_warned_of_once(flags, warned, bf16_trainer, monkeypatch, capsys):
    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda: flags)
    callback = WarnOfEmulatedBf16()
    for stage in ("fit", "test"):
        callback.setup(bf16_trainer, L.LightningModule(), stage)
    lines = capsys.readouterr().err.splitlines()
    expected = (
        "genlab: warning: bf16-mixed on this CPU (no AMX or AVX-512-BF16 unit: bf16 matmuls are emulated, "
        "many times slower than fp32); use --trainer.precision 32-true, or a GPU"
    )
    assert lines == ([expected] if warned else [])


def test_fp32_on_a_cpu_without_a_bf16_unit_is_not_warned_of(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu_precision, "cpu_flags", lambda: {"avx2"})
    trainer = L.Trainer(accelerator="cpu", precision="32-true", logger=False, default_root_dir=tmp_path)
    WarnOfEmulatedBf16().setup(trainer, L.LightningModule(), "fit")
    assert capsys.readouterr().err == ""


def test_cpu_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU implementer\t: 0x41\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(arm) == {"fp", "asimd", "bf16"}
    assert cpu_flags(tmp_path / "missing") is None


def test_wandb_does_not_answer_lightnings_anonymous_none_with_a_warning(tmp_path, monkeypatch, capsys):
    """Lightning passes ``anonymous=None``; wandb warns of any value ("The anonymous setting has no effect")."""
    from wandb.sdk.wandb_settings import Settings

    silence_wandb_anonymous_notice()
    Settings(anonymous=None)
    assert "anonymous setting" not in capsys.readouterr().err


def test_a_fresh_run_folder_raises_no_warning_that_its_files_will_be_deleted(tmp_path):
    logger = CSVLogger(save_dir=str(tmp_path / "runs"), name="fresh")
    trainer = L.Trainer(logger=logger, default_root_dir=tmp_path, enable_checkpointing=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert run_folder.claim_for(trainer, None, None) is False
            logger.log_metrics({"x": 1.0}, step=0)
            logger.save()
    finally:
        run_folder.release_claims()
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    assert (Path(logger.log_dir) / "metrics.csv").is_file()


#: What the libraries used to print on every run: deprecations of Lightning's calls of jsonargparse,
#: wandb's answer to Lightning's ``anonymous=None``, the CSV logger on genlab's fresh folder, Lightning's
#: note on the checkpoint SaveOnInterrupt writes.
SILENCED = ("deprecated in v4", "JsonargparseDeprecationWarning", "anonymous setting", "exists and is not empty", "weights_only")


@pytest.mark.slow  # starts train.py, and stops it with SIGINT
def test_a_run_stopped_by_ctrl_c_prints_none_of_the_silenced_warnings(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "wgan_ring8_spectral_norm.yaml"), "--trainer.max_epochs", "2"]
    args += ["--trainer.limit_train_batches", "3", "--trainer.enable_progress_bar", "false", *signal_at_args(1, 1, "SIGINT")]
    # Every warning shown, as pytest shows them, and W&B's own lines too.
    result = run_cli(args, cwd=tmp_path, env={"PYTHONWARNINGS": "default", "WANDB_SILENT": "false"})
    assert result.returncode == 130, result.stderr
    assert "wandb: " in result.stderr and "Seed set to 0" in result.stderr  # the libraries did speak
    assert [line for line in result.stderr.splitlines() if any(noise in line for noise in SILENCED)] == []


@pytest.mark.parametrize("content", [b"\x80\x03garbage", bytes(range(256)) * 8])
def test_a_file_that_is_no_checkpoint_gets_its_one_line_without_torchs_pickle_warning(content, tmp_path):
    """torch warns "Detected pickle protocol 3 in the checkpoint ..." and then fails to read such a file."""
    from cli.checkpoint_contract import load_checkpoint

    path = tmp_path / "not_a.ckpt"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match="is not a readable checkpoint"):
            load_checkpoint(path)
    assert [str(warning.message) for warning in caught] == []
