"""A checkpoint is a contract: it resumes (or is evaluated by) only the experiment that wrote it,
and only if there is training left to do; both are checked before Lightning loads it, so that a
refused checkpoint changes nothing on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli import run_folder
from core.errors import ConfigError
from core.torch_files import torch_load


def resolve_checkpoint(ckpt_path: str, run_name: str, default_root_dir: str | None) -> Path:
    """``last``: the newest ``<root>/runs/<run_name>/*/checkpoints/last.ckpt``; else the file given.
    A ``last.ckpt`` link whose epoch checkpoint is gone is named as such, never skipped for an older run."""
    if ckpt_path == "last":
        runs = run_folder.runs_root(default_root_dir) / run_name
        links = sorted(
            (
                folder / "checkpoints" / "last.ckpt"
                for folder in runs.glob("*")
                if os.path.lexists(folder / "checkpoints" / "last.ckpt")
            ),
            key=lambda path: path.lstat().st_mtime,
        )
        if not links:
            raise ConfigError(
                f"--ckpt_path last: run {run_name!r} has no checkpoint ({runs}/*/checkpoints/last.ckpt); "
                "train it without --ckpt_path first."
            )
        return checked_file(links[-1], "--ckpt_path last: the newest checkpoint of the run, ")
    return checked_file(Path(ckpt_path), f"--ckpt_path {ckpt_path}: ")


def checked_file(path: Path, prefix: str) -> Path:
    """``path`` if it is a file to load; else why not: a folder, a link to a file that is gone, nothing."""
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(
            f"{prefix}{path} is a folder: pass a checkpoint file, "
            f"e.g. {path / 'checkpoints' / 'last.ckpt'} or {path / 'last.ckpt'}."
        )
    if path.is_symlink():
        raise ConfigError(
            f"{prefix}{path} links to {os.readlink(path)}, which no longer exists: "
            "pass another checkpoint of the run (its checkpoints/ folder), or remove the link."
        )
    raise ConfigError(
        f"{prefix}{path}: no such file "
        "(a run's checkpoints are in runs/<run_name>/version_N/checkpoints/; 'last' takes the newest)."
    )


#: Model arguments the CLI links from the data: not the user's to set, so not compared on resume.
LINKED = {"sample_shape", "num_classes"}
#: Data arguments a resumed run may change: where and how the same samples are loaded, and the batch size.
RESUMABLE_DATA_CHANGES = {"data_dir", "batch_size", "in_memory", "data_on_device", "num_workers", "download"}
#: Model arguments that change only what ``test`` measures (how many importance samples, which noise
#: levels): a test of trained weights may set them.
EVALUATION_SETTINGS = {"test_samples", "test_chunk", "test_noise_stds"}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents (tensors only: ``weights_only``), or why it is no checkpoint to resume."""
    try:
        checkpoint = torch_load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch.load raises, the file is no checkpoint to resume
        raise ConfigError(
            f"--ckpt_path {path} is not a readable checkpoint ({type(error).__name__}): "
            "pass a .ckpt file written by a genlab run."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "pytorch-lightning_version" not in checkpoint:
        raise ConfigError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no training state): pass a .ckpt file written by a genlab run."
        )
    return checkpoint


def check_checkpoint_matches(checkpoint: dict[str, Any], path: Path, config: dict, evaluating: bool = False) -> None:
    """A checkpoint resumes only the experiment that wrote it: same model and data classes, same
    model settings (Lightning would otherwise replace the config's by the checkpoint's without a
    word), same data but for how it is loaded; trainer settings such as ``max_epochs`` apply as given.
    ``evaluating`` (test, validate, predict) also lets the config set :data:`EVALUATION_SETTINGS`."""
    saved = checkpoint.get("hyper_parameters", {})
    saved_data = checkpoint.get("datamodule_hyper_parameters", {})
    for what, key, saved_class in (("model", "model", saved.get("_class_path")), ("data", "data", saved_data.get("_class_path"))):
        if saved_class and saved_class != config[key]["class_path"]:
            raise ConfigError(
                f"--ckpt_path {path} was written by {what} {saved_class}, "
                f"but the config's {what} is {config[key]['class_path']}: "
                f"resume with the config that wrote it (config.yaml in its run folder) or train without --ckpt_path."
            )
    changes = []
    model_free = LINKED | EVALUATION_SETTINGS if evaluating else LINKED
    for key, saved_args, free in (("model", saved, model_free), ("data", saved_data, RESUMABLE_DATA_CHANGES)):
        given = config[key].get("init_args", {})
        changes += [
            f"{key}.init_args.{name}={given[name]!r} (checkpoint: {value!r})"
            for name, value in saved_args.items()
            if not name.startswith("_") and name not in free and name in given and as_json(given[name]) != as_json(value)
        ]
    if changes:
        raise ConfigError(
            f"--ckpt_path {path}: a resumed run keeps its model and data settings, but the config sets {', '.join(changes)}: "
            "drop these to resume, or train a new run without --ckpt_path."
        )


def as_json(value: object) -> str:
    """A config value in a canonical form, to compare a checkpoint's setting with the config's."""
    return json.dumps(value, sort_keys=True, default=str)


def check_training_left(checkpoint: dict[str, Any], path: Path, trainer: Any) -> None:
    """A resume of a run that already reached its ``max_epochs`` or ``max_steps`` would train nothing;
    say so now, naming the limit to raise, instead of after the run folder was touched. Epochs done
    are the loop's processed epochs (an epoch-end checkpoint counts its epoch, a mid-epoch one not)."""
    epochs_done = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    max_steps = trainer.get("max_steps")
    max_epochs = trainer.get("max_epochs")
    if max_epochs is None and max_steps in (None, -1):
        max_epochs = 1000  # Lightning's default when neither is set
    if max_steps not in (None, -1) and checkpoint["global_step"] >= max_steps:
        reached = f"it is at step {checkpoint['global_step']} of --trainer.max_steps {max_steps}): raise --trainer.max_steps"
    elif max_epochs not in (None, -1) and epochs_done >= max_epochs:
        reached = (
            f"it trained {epochs_done} epoch{'s' * (epochs_done != 1)} of --trainer.max_epochs {max_epochs}): "
            "raise --trainer.max_epochs"
        )
    else:
        return
    raise ConfigError(
        f"--ckpt_path {path}: that run is complete ({reached} to train it further, or leave out --ckpt_path to start a new run."
    )


def hold_against_config(subcommand: str, config: Any, resolved: Callable[[], dict]) -> tuple[int | None, dict[str, Any]]:
    """Check the run's name and ``config.ckpt_path`` (``last`` resolved, in place) against the config
    (``resolved()``, as a dict) before Lightning loads it: the checkpoint of this experiment, with
    training left for a fit. Returns the fit's steps done (``None`` when not fitting) and, for an
    evaluation, the :data:`EVALUATION_SETTINGS` the config gives, which Lightning would otherwise
    replace by the checkpoint's."""
    fitting = subcommand == "fit"
    if not fitting and config.get("ckpt_path") is None:
        raise ConfigError(
            f"{subcommand} evaluates trained weights: "
            "pass --ckpt_path (a run's checkpoints/last.ckpt, or last for the newest run)."
        )
    run_folder.require_folder_name(config.run_name)
    if config.get("ckpt_path") in (None, "best", "hpc", "registry"):
        return None, {}
    path = resolve_checkpoint(config.ckpt_path, config.run_name, config.trainer.default_root_dir)
    config.ckpt_path = str(path)
    checkpoint = load_checkpoint(path)
    check_checkpoint_matches(checkpoint, path, resolved(), evaluating=not fitting)
    if fitting:
        check_training_left(checkpoint, path, config.trainer)
        return checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"], {}
    given = config.model.get("init_args") or {}
    return None, {name: given[name] for name in EVALUATION_SETTINGS if name in given}


def keep_model_arguments_only(hparams: dict, model_arguments: set[str]) -> None:
    """Lightning records every applied instantiation link in the model's hyperparameters, also one the
    model does not take (``data.num_classes`` for an unconditional GAN); a checkpoint holding it could
    not rebuild the model. Keep the model's own arguments only."""
    for key in [key for key in hparams if not key.startswith("_") and key not in model_arguments]:
        del hparams[key]
