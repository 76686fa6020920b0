"""The experiment configs: each a short diff of its family's base that resolves, names its run and
changes the resolved config with every line it holds; strategies chosen as objects."""

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from train import main

EXPERIMENTS = sorted((ROOT / "configs").glob("*.yaml"))


def resolved(*args: str) -> dict:
    """``train.py fit ARGS --print_config``, in-process, as a dict."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None), printed.getvalue()
    return yaml.safe_load(printed.getvalue())


@pytest.fixture(scope="module")
def configs_copy(tmp_path_factory) -> Path:
    """A copy of configs/ where an experiment can be edited with its relative references intact."""
    return Path(shutil.copytree(ROOT / "configs", tmp_path_factory.mktemp("copy") / "configs"))


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda path: path.stem)
def test_every_experiment_is_a_header_and_a_diff_that_resolves_under_its_own_name(experiment):
    lines = experiment.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert 2 <= len(header) <= 4 and lines[: len(header)] == header, "a 2-4 line header, then keys"
    assert lines[len(header)].startswith("config: "), "the first key loads the base"
    config = resolved("--config", str(experiment))
    assert config["run_name"] == experiment.stem
    assert all(logger["init_args"]["name"] is None for logger in config["trainer"]["logger"])  # they take the run name
    assert config["model"]["class_path"].startswith("lightning_modules.")


def test_every_experiment_extends_a_base_file_directly():
    """One level deep: an experiment reads as its family's base plus what differs, never as a diff of another experiment."""
    first_keys = {
        path.name: next(line for line in path.read_text().splitlines() if not line.startswith("#")) for path in EXPERIMENTS
    }
    assert {name: key for name, key in first_keys.items() if not key.startswith("config: base/")} == {}
    assert all((ROOT / "configs" / key.removeprefix("config: ")).is_file() for key in first_keys.values())


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda path: path.stem)
def test_no_line_of_an_experiment_restates_what_it_would_be_anyway(experiment, configs_copy):
    """Dropping any one key of an experiment changes its resolved config."""
    lines = experiment.read_text().splitlines()
    edited = configs_copy / experiment.name
    full = resolved("--config", str(edited))
    for index, line in enumerate(lines):
        if line.startswith(("#", "config:")):
            continue
        edited.write_text("\n".join(lines[:index] + lines[index + 1 :]))
        assert resolved("--config", str(edited)) != full, f"{experiment.name}: {line!r} changes nothing"
    edited.write_text("\n".join(lines))


def test_the_run_name_can_be_overridden_and_a_logger_named_by_hand_keeps_its_name():
    config = resolved("--config", str(ROOT / "configs/gan_mnist.yaml"), "--run_name", "my_run")
    assert config["run_name"] == "my_run"
    config = resolved("--config", str(ROOT / "configs/gan_mnist.yaml"), "--trainer.logger.init_args.name", "by_hand")
    assert [logger["init_args"]["name"] for logger in config["trainer"]["logger"]] == [None, "by_hand"]


def test_a_lipschitz_strategy_is_an_object_with_only_its_own_arguments():
    base = ROOT / "configs/wgan_ring8_spectral_norm.yaml"
    config = resolved(
        "--config",
        str(base),
        "--model.init_args.lipschitz",
        "WeightClipping",
        "--model.init_args.lipschitz.init_args.clip_value",
        "0.05",
    )
    assert config["model"]["init_args"]["lipschitz"] == {
        "class_path": "lightning_modules.components.lipschitz.WeightClipping",
        "init_args": {"clip_value": 0.05},
    }
    config = resolved("--config", str(ROOT / "configs/wgan_ring8_gradient_penalty.yaml"))
    assert config["model"]["init_args"]["lipschitz"] == {
        "class_path": "lightning_modules.components.lipschitz.GradientPenalty",
        "init_args": {"weight": 10.0},
    }
    assert not {"gp_weight", "clip_value", "n_power_iterations"} & config["model"]["init_args"].keys()


def test_help_lists_a_strategys_own_arguments(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/wgan_ring8_spectral_norm.yaml"),
                "--model.init_args.lipschitz.help",
                "GradientPenalty",
            ]
        )
    shown = capsys.readouterr().out
    assert "--lipschitz.weight" in shown and "the penalty's weight" in shown and "default: 10.0" in shown


def test_the_generator_loss_is_chosen_by_class():
    config = resolved("--config", str(ROOT / "configs/gan_mnist_saturating.yaml"))
    assert config["model"]["init_args"]["loss"] == {"class_path": "lightning_modules.components.losses.SaturatingGANLoss"}


@pytest.mark.parametrize("callbacks", sorted((ROOT / "configs" / "callbacks").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_checkpoint_callback_replaces_its_files_on_resume(callbacks):
    """Lightning's version counter forks ``last.ckpt`` into ``last-v1.ckpt`` when a run resumes in a
    moved folder (tests/test_cli.py shows it); every config turns it off."""
    checkpoints = [entry for entry in yaml.safe_load(callbacks.read_text()) if entry["class_path"].endswith("ModelCheckpoint")]
    assert checkpoints and all(entry["init_args"]["enable_version_counter"] is False for entry in checkpoints)
