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

The policy of a run lives in ``cli/``, one mechanism per module: where its files go (``run_folder``),
what a checkpoint may resume (``checkpoint_contract``), how checkpoints reach the disk
(``checkpoint_io``), the process set-up (``process_setup``), and how a run that does not finish ends:
one line naming the fix, without a traceback (``run_end``).
"""

from __future__ import annotations

import sys

from core.stopping import exit_with, handle_signals, raise_stopped, restore_signals

if __name__ == "__main__":  # Ctrl+C or SIGTERM while the libraries load (5-10 s): one line, not a traceback of an import
    handle_signals(exit_with("genlab: error: stopped by {signal} before training started; nothing was written."))

import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from callbacks.batch_contract import RequireBatchesTheModelAccepts
from callbacks.cpu_precision import WarnOfEmulatedBf16
from callbacks.population_members import RequireCallbacksAPopulationSupports, measure_each_member
from callbacks.progress_bar import GenlabProgressBar
from callbacks.run_forecast import RunForecast
from callbacks.run_guards import RequireTraining, SaveOnInterrupt
from callbacks.run_summary import RunSummary
from cli import run_folder
from cli.checkpoint_contract import hold_against_config, keep_model_arguments_only
from cli.checkpoint_io import AtomicCheckpointIO
from cli.process_setup import set_up_process
from cli.run_end import end_run
from cli.save_config import SaveConfigWhenTrainingStarts

SUBCOMMANDS = ("fit", "validate", "test", "predict")


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
        # The other way, from the model's config: a population of runs (OptimizerStudy) gets one data order per seed.
        parser.link_arguments("model.init_args.seeds", "data.init_args.population_seeds", apply_on="parse")

    def parse_arguments(self, parser, args) -> None:
        """Name the run after its experiment file, then hold a checkpoint to resume from against the
        config, before Lightning merges its hyperparameters in."""
        self.config = parser.parse_args(
            run_folder.with_default_run_name(list(sys.argv[1:] if args is None else args), SUBCOMMANDS)
        )
        subcommand = self.config.get("subcommand")

        def resolved() -> dict:
            dumped = yaml.safe_load(parser.dump(self.config, skip_unset=False))
            return dumped.get(subcommand, dumped)

        self.steps_done, self.evaluation_settings = hold_against_config(subcommand, self.subcommand_config(), resolved)

    def subcommand_config(self):
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def before_instantiate_classes(self) -> None:
        """Place the run (``cli.run_folder``). Lightning has replaced the model's settings by the
        checkpoint's (``--ckpt_path``): a test keeps the evaluation settings it was given."""
        config = self.subcommand_config()
        for name, value in self.evaluation_settings.items():
            config.model.init_args[name] = value
        checkpoint = config.get("ckpt_path")
        fitting = self.config.get("subcommand") == "fit"
        run_folder.place_run(config.trainer, config.run_name, Path(checkpoint) if checkpoint and fitting else None)

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        keep_model_arguments_only(self.model.hparams, set(vars(self.subcommand_config().model.init_args)))
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default; a custom one is kept
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for index, callback in enumerate(self.trainer.callbacks):  # Lightning's bar (a configured one too) gets genlab's labels
            if type(callback) is TQDMProgressBar:
                self.trainer.callbacks[index] = GenlabProgressBar(callback.refresh_rate, callback.process_position)
        # A population (model.init_args.seeds): the callbacks that read one network run once per member.
        self.trainer.callbacks = measure_each_member(self.trainer.callbacks, self.model)
        # SaveOnInterrupt first (the CLI appends its defaults last): its on_train_end hands Ctrl+C back
        # before the final measurements of the other callbacks begin.
        self.trainer.callbacks.sort(key=lambda callback: not isinstance(callback, SaveOnInterrupt))
        if self.subcommand == "fit" and run_folder.claim_for(
            self.trainer, self.subcommand_config().get("ckpt_path"), self.steps_done
        ):
            # The run's own checkpoints, which it goes on replacing: Lightning's warning is for a folder of another run.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        """The Trainer; an argument it refuses (``ValueError``/``TypeError`` from its constructor, e.g.
        an unknown ``strategy``) is the user's to fix, like a ``MisconfigurationException``."""
        try:
            return super().instantiate_trainer(**kwargs)
        except (ValueError, TypeError) as error:
            raise MisconfigurationException(str(error)) from error


def run_callbacks(args: list[str]) -> list[L.Callback]:
    """What every run gets besides the experiment's callbacks: its guards, and its first and last words."""
    return [
        RequireTraining(),
        RequireBatchesTheModelAccepts(),
        RequireCallbacksAPopulationSupports(),
        WarnOfEmulatedBf16(),
        RunForecast(),
        RunSummary(args),
    ]


def main(args: list[str] | None = None) -> GenlabCLI:
    # Until training starts (SaveOnInterrupt takes over), and again once it ends, SIGINT and SIGTERM
    # raise Stopped, answered by cli.run_end; this also undoes the SIGINT a background job inherits ignored.
    previous = handle_signals(raise_stopped)
    set_up_process()
    interrupt = SaveOnInterrupt()
    args_given = list(sys.argv[1:] if args is None else args)
    try:
        return GenlabCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigWhenTrainingStarts,
            save_config_kwargs={"overwrite": True},  # the run folder is checked to be fresh first
            trainer_defaults={"callbacks": [interrupt, *run_callbacks(args_given)]},
            # Parse errors raise instead of printing the whole usage (cli.run_end prints them as one line),
            # and a misspelt option is an error, not silently expanded to the option it abbreviates.
            parser_kwargs={
                "exit_on_error": False,
                "allow_abbrev": False,
                **{name: {"exit_on_error": False, "allow_abbrev": False} for name in SUBCOMMANDS},
            },
            args=args,
        )
    except BaseException as error:
        end_run(error, interrupt, args_given)
        raise
    finally:
        run_folder.release_claims()
        restore_signals(previous)


if __name__ == "__main__":
    main()
