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

import logging
import sys
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from callbacks import NonFiniteLossError
from datamodules import DataError
from lightning_modules.errors import ConfigError

USER_ERRORS = (ConfigError, DataError, NonFiniteLossError)

# Console noise genlab knows to be harmless, silenced by its exact message; every other warning stays.
# Lightning's own use of a deprecated torch pytree API:
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
# The GAN datamodules serve a validation split the GANs do not use (they have no validation_step):
warnings.filterwarnings("ignore", message=r"You passed in a `val_dataloader` but have no `validation_step`")
# An advertisement for a cloud logger, printed by Lightning on every run:
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda record: not record.getMessage().startswith("💡 Tip: For seamless cloud logging"))
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
        parser.add_argument("--run_name", type=str, default="genlab", help="Name of the run: runs/<run_name>/ and the loggers' name. Default: the experiment file's name.")
        parser.link_arguments("data.sample_shape", "model.init_args.sample_shape", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        """Default ``--run_name`` to the experiment file's name; a ``run_name`` in a config file or
        on the command line still wins (the inserted default comes first)."""
        args = list(sys.argv[1:] if args is None else args)
        subcommand = next((i for i, arg in enumerate(args) if arg in SUBCOMMANDS), None)
        name = experiment_name(args[subcommand + 1 :]) if subcommand is not None else None
        if name is not None:
            args[subcommand + 1 : subcommand + 1] = ["--run_name", name]
        self.config = parser.parse_args(args)

    def subcommand_config(self):
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self.subcommand_config()
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if logger and not isinstance(logger, bool) and logger.init_args.get("name", "") is None:
                logger.init_args.name = config.run_name

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Lightning records every applied instantiation link in the model's hyperparameters, also one
        # the model does not take (data.num_classes for an unconditional GAN); a checkpoint holding it
        # could not rebuild the model. Keep the model's own arguments only.
        own = set(vars(self.subcommand_config().model.init_args))
        for key in [key for key in self.model.hparams if not key.startswith("_") and key not in own]:
            del self.model.hparams[key]


def user_error(error: BaseException | None) -> BaseException | None:
    """The user-fixable error behind ``error``, if any (jsonargparse wraps errors raised in ``__init__``)."""
    while error is not None and not isinstance(error, USER_ERRORS):
        error = error.__cause__ or error.__context__
    return error


def main(args: list[str] | None = None) -> GenlabCLI:
    try:
        return GenlabCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except Exception as error:
        if user_error(error) is None:
            raise
        sys.exit(f"genlab: error: {user_error(error)}")


if __name__ == "__main__":
    main()
