"""genlab's command line: the Lightning CLI over every model and datamodule in the project.

    python train.py fit --config configs/gan_mnist.yaml                    # train (a)
    python train.py fit --config configs/gan_mnist.yaml --trainer configs/trainer/ddp.yaml
    python train.py fit --config configs/gan_mnist.yaml --model.init_args.n_critic 5 --run_name k5
    python train.py fit --config configs/gan_mnist.yaml --ckpt_path runs/.../last.ckpt   # resume
    python train.py fit --config configs/gan_mnist.yaml --print_config     # the resolved config
    python train.py fit --help

An experiment file is a diff: its first key, ``config: base/<family>.yaml``, loads the family's base
(jsonargparse's own composition), and the keys after it override the base. The run is named after
the experiment file (``runs/<run_name>/``, the CSV and W&B run name) unless ``--run_name`` says
otherwise; every logger whose ``name`` is null takes the run name.

Errors the user can fix (bad config value, missing or corrupt data, a diverged loss) are printed as
one line naming the fix, without a traceback.
"""

from __future__ import annotations

import signal
import sys

if __name__ == "__main__":  # Ctrl+C or SIGTERM while the libraries load (5-10 s): one line, not a traceback of an import

    def stopped_while_loading(signum, frame):
        print(f"genlab: error: stopped by {signal.Signals(signum).name} before training started; nothing was written.", file=sys.stderr)
        sys.exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stopped_while_loading)

import errno
import logging
import re
import shlex
import shutil
import warnings
from pathlib import Path
from typing import NoReturn

import lightning as L
import yaml
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from callbacks.run_guards import RequireTraining, SaveOnInterrupt, Stopped, raise_stopped
from cli import run_folder
from cli.checkpoint_contract import (
    EVALUATION_SETTINGS,
    check_checkpoint_matches,
    check_training_left,
    load_checkpoint,
    resolve_checkpoint,
)
from cli.checkpoint_io import AtomicCheckpointIO
from cli.cpu_process import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from core.errors import ConfigError, GenlabError

USER_ERRORS = (GenlabError,)

# Console noise genlab knows to be harmless, silenced by its exact message; every other warning stays.
# Lightning's own use of a deprecated torch pytree API:
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# The GAN datamodules serve a validation split the GANs do not use (they have no validation_step):
warnings.filterwarnings("ignore", message=r"You passed in a `val_dataloader` but have no `validation_step`")
# An advertisement for a cloud logger, printed by Lightning on every run:
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip: For seamless cloud logging")
)
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def experiment_name(args: list[str]) -> str | None:
    """The file name (without ``.yaml``) of the first ``--config`` after the subcommand: the experiment."""
    for index, arg in enumerate(args):
        if arg in ("--config", "-c") and index + 1 < len(args):
            return Path(args[index + 1]).stem
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1]).stem
    return None


class GenlabCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run_name",
            type=str,
            default="genlab",
            help="Name of the run: runs/<run_name>/ and the loggers' name. Default: the experiment file's name.",
        )
        parser.link_arguments("data.sample_shape", "model.init_args.sample_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Default ``--run_name`` to the experiment file's name (a ``run_name`` in a config file or
        on the command line still wins: the inserted default comes first), then hold a checkpoint
        to resume from against the config, before Lightning merges its hyperparameters in."""
        args = list(sys.argv[1:] if args is None else args)
        subcommand = next((i for i, arg in enumerate(args) if arg in SUBCOMMANDS), None)
        name = experiment_name(args[subcommand + 1 :]) if subcommand is not None else None
        if name is not None:
            args[subcommand + 1 : subcommand + 1] = ["--run_name", name]
        self.config = parser.parse_args(args)
        config = self.subcommand_config()
        if self.config.get("subcommand") != "fit" and config.get("ckpt_path") is None:
            raise ConfigError(
                f"{self.config.subcommand} evaluates trained weights: pass --ckpt_path (a run's checkpoints/last.ckpt, or last for the newest run)."
            )
        run_folder.require_folder_name(config.run_name)
        if config.get("ckpt_path") not in (None, "best", "hpc", "registry"):
            path = resolve_checkpoint(config.ckpt_path, config.run_name, config.trainer.default_root_dir)
            config.ckpt_path = str(path)
            dumped = yaml.safe_load(parser.dump(self.config, skip_none=False))
            fitting = self.config.get("subcommand") == "fit"
            checkpoint = load_checkpoint(path)
            check_checkpoint_matches(checkpoint, path, dumped.get(self.config.get("subcommand"), dumped), evaluating=not fitting)
            if fitting:
                check_training_left(checkpoint, path, config.trainer)
                self.steps_done = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
            if self.config.get("subcommand") != "fit":
                given = config.model.get("init_args") or {}
                self.evaluation_settings = {name: given[name] for name in EVALUATION_SETTINGS if name in given}

    def subcommand_config(self):
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Place the run (``cli.run_folder``): its loggers named after it under ``<root>/runs/``, a
        resume from its own folder continued there and in its W&B run. Lightning has replaced the
        model's settings by the checkpoint's (``--ckpt_path``): a test keeps the evaluation settings
        it was given (``--model.init_args.test_samples 5000``)."""
        config = self.subcommand_config()
        for name, value in getattr(self, "evaluation_settings", {}).items():
            config.model.init_args[name] = value
        checkpoint = config.get("ckpt_path")
        fitting = self.config.get("subcommand") == "fit"
        run_folder.place_run(config.trainer, config.run_name, Path(checkpoint) if checkpoint and fitting else None)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Lightning records every applied instantiation link in the model's hyperparameters, also one
        # the model does not take (data.num_classes for an unconditional GAN); a checkpoint holding it
        # could not rebuild the model. Keep the model's own arguments only.
        own = set(vars(self.subcommand_config().model.init_args))
        for key in [key for key in self.model.hparams if not key.startswith("_") and key not in own]:
            del self.model.hparams[key]
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default; a custom one is kept
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        # SaveOnInterrupt first (the CLI appends its defaults last): its on_train_end hands Ctrl+C back
        # before the final measurements of the other callbacks begin.
        self.trainer.callbacks.sort(key=lambda callback: not isinstance(callback, SaveOnInterrupt))
        self.claim_run_folder()

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The Trainer; an argument it refuses (``ValueError``/``TypeError`` from its constructor, e.g.
        an unknown ``strategy``) is the user's to fix, like a ``MisconfigurationException``."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError) as error:
            raise MisconfigurationException(str(error)) from error

    def claim_run_folder(self) -> None:
        """One run, one folder: a fresh run creates its folder (``runs/<run_name>/version_N``)
        atomically before anything is written, and refuses one that exists (named by a logger's
        ``version``, or claimed a moment ago by a run started at the same time); a run resumed from
        a checkpoint inside its folder continues there. Either way the folder stays locked while
        the run writes to it."""
        logger = self.trainer.logger
        if (
            self.subcommand != "fit"
            or not self.trainer.is_global_zero
            or not (logger is None or isinstance(logger, run_folder.VERSIONED_LOGGERS))
        ):
            return
        log_dir = Path(self.trainer.log_dir)
        checkpoint = self.subcommand_config().get("ckpt_path")
        in_place = bool(checkpoint) and log_dir.resolve() in Path(checkpoint).resolve().parents
        run_folder.claim(log_dir, resuming_in_place=in_place)
        if in_place:
            run_folder.continue_metrics(self.trainer.loggers, self.steps_done)  # read once, in parse_arguments
            # The run's own checkpoints, which it goes on replacing: Lightning's warning is for a folder of another run.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


#: OS errors a user fixes by pointing genlab elsewhere or fixing the file system, named by their file.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def user_message(error: BaseException | None) -> str | None:
    """One line saying what the user can fix, if ``error`` (or what caused it: jsonargparse and
    Lightning wrap errors raised in ``__init__`` and hooks) is of a kind the user can fix."""
    while error is not None:
        if isinstance(error, USER_ERRORS):
            return str(error)
        if isinstance(error, MisconfigurationException):  # Lightning: a Trainer argument that cannot work
            return f"{one_line(str(error))} (the Trainer's options: python train.py fit --help)"
        if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS and error.filename:
            return f"{error.filename}: {error.strerror}. Fix its permissions or free space, or point the run elsewhere (--trainer.default_root_dir, the logger's save_dir, data.data_dir)."
        if isinstance(error, UnicodeDecodeError):
            return f"{undecodable_file(error)} is not a text file in UTF-8 ({error.reason} at byte {error.start}): a config is YAML text; pass the right file, or re-save it as UTF-8."
        if type(error).__module__.startswith("wandb") and type(error).__name__ in (
            "UsageError",
            "AuthenticationError",
            "CommError",
        ):
            return f"W&B: {one_line(str(error)).rstrip('.')}. Log in with `wandb login` (or set WANDB_API_KEY), or log offline: --trainer.logger configs/logger/offline.yaml."
        error = error.__cause__ or error.__context__
    return None


def undecodable_file(error: UnicodeDecodeError) -> str:
    """The file whose bytes ``error`` could not decode: the path that the innermost ``read_text``
    (jsonargparse's or pathlib's) was reading, found in the traceback's frames."""
    path, traceback = "a config file", error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "read_text" and "self" in frame.f_locals:
            path = str(frame.f_locals["self"])
        traceback = traceback.tb_next
    return path


def main(args: list[str] | None = None) -> GenlabCLI:
    # Until training starts (SaveOnInterrupt takes over), and again once it ends, SIGINT and SIGTERM
    # raise Stopped, answered below; this also undoes the SIGINT a background job inherits ignored.
    handlers = {signum: signal.signal(signum, raise_stopped) for signum in (signal.SIGINT, signal.SIGTERM)}
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()
    interrupt = SaveOnInterrupt()
    try:
        return GenlabCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigWhenTrainingStarts,
            save_config_kwargs={"overwrite": True},  # the run folder is checked to be fresh first
            trainer_defaults={"callbacks": [interrupt, RequireTraining()]},
            # Parse errors raise instead of printing the whole usage (main() prints them as one line),
            # and a misspelt option is an error, not silently expanded to the option it abbreviates.
            parser_kwargs={"exit_on_error": False, "allow_abbrev": False, **{name: {"exit_on_error": False, "allow_abbrev": False} for name in SUBCOMMANDS}},
            args=args,
        )
    except ArgumentError as error:
        fail(f"{one_line(str(error))} (the options: python train.py fit --help)")
    except SIGTERMException:  # raised by Lightning's loops only, after SaveOnInterrupt saved the checkpoint
        received = interrupt.received
        command = shlex.join(without_ckpt_path(sys.argv[1:] if args is None else args))
        close_wandb(128 + received)
        print(
            f"genlab: stopped by {received.name} at epoch {interrupt.epoch}, step {interrupt.step}; saved {interrupt.checkpoint}. "
            f"Resume: python train.py {command} --ckpt_path {interrupt.checkpoint}",
            file=sys.stderr,
        )
        sys.exit(128 + received)
    except Stopped as stop:
        code = 128 + stop.signal
        if interrupt.trained:
            fail(f"stopped by {stop.signal.name} after training, during the final measurements; the trained weights are in {interrupt.checkpoint_folder}/.", code)
        if not interrupt.started and discard_unstarted_run(code):
            fail(f"stopped by {stop.signal.name} before training started; nothing was written.", code)
        fail(f"stopped by {stop.signal.name} before training started; nothing was trained, the run's files are as they were.", code)
    except Exception as error:
        message = user_message(error)
        if message is None:
            raise
        if not interrupt.started:
            discard_unstarted_run(2)
        fail(message)
    finally:
        run_folder.release_claims()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


class SaveConfigWhenTrainingStarts(SaveConfigCallback):
    """The resolved ``config.yaml`` of a fit is written when training starts, not at setup: a run
    refused or stopped before (a bad resume, missing data, Ctrl+C) leaves its folder's earlier
    ``config.yaml`` as it was, or no folder at all."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().setup(trainer, pl_module, "fit")


def discard_unstarted_run(code: int) -> bool:
    """A fresh run that ended before its first training step: remove its folder and its W&B run, so
    that nothing half-written is left and the version number is free again. Returns whether there was
    one (a resume's folder is the run's own, and stays)."""
    wandb_folder = wandb_run_folder()
    close_wandb(code)
    removed = run_folder.remove_fresh_claims()
    if removed and wandb_folder is not None:
        shutil.rmtree(wandb_folder, ignore_errors=True)
    return removed


def without_ckpt_path(args: list[str]) -> list[str]:
    """``args`` without a ``--ckpt_path`` option (given as one argument or two)."""
    kept, rest = [], iter(args)
    for arg in rest:
        if arg == "--ckpt_path":
            next(rest, None)  # and its value
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return kept


#: Lines of jsonargparse's explanations that say nothing the user can act on.
PARSER_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Expected a <class 'NoneType'>|Given value type:|Given value:)"
)


def one_line(message: str) -> str:
    """jsonargparse's indented, multi-line explanation of a bad value, as one line of what matters."""
    lines = (line.strip().removeprefix("- ") for line in message.splitlines())
    return " ".join(line for line in lines if line and not PARSER_NOISE.match(line))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``genlab: error: MESSAGE`` as the last line of stderr and exit with ``code``."""
    close_wandb(code)
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def wandb_run_folder() -> Path | None:
    """The folder of this process's open W&B run (``runs/wandb/offline-run-...``), if one is open."""
    wandb = sys.modules.get("wandb")
    return Path(wandb.run.dir).parent if wandb is not None and wandb.run is not None else None


def close_wandb(code: int) -> None:
    """End an open W&B run now, so that its closing words come before genlab's last line, not after."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=code)


if __name__ == "__main__":
    main()
