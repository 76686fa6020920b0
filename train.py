"""genlab's command line: the Lightning CLI over every model and datamodule in the project.

    python train.py fit --config configs/gan_mnist.yaml                    # train (a)
    python train.py fit --config configs/gan_mnist.yaml --config configs/trainer/ddp.yaml
    python train.py fit --config configs/gan_mnist.yaml --model.init_args.n_critic 5
    python train.py fit --config configs/gan_mnist.yaml --ckpt_path runs/.../last.ckpt   # resume
    python train.py fit --help

Errors the user can fix (bad config value, missing or corrupt data, a diverged loss) are printed as
one line naming the fix, without a traceback.
"""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.cli import LightningCLI

from callbacks import NonFiniteLossError
from datamodules import DataError
from lightning_modules.errors import ConfigError

USER_ERRORS = (ConfigError, DataError, NonFiniteLossError)


class GenlabCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.sample_shape", "model.init_args.sample_shape", apply_on="instantiate")


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
