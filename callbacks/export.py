"""Export a trained classifier as one small, self-describing file into its run folder.

The export never replaces the stored domain classifier of the sample-quality metrics by itself:
``python -m cli.export promote FILE`` does, after checking that the run completed and reached the
target test accuracy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
import torch

from callbacks.run_outputs import run_directory, write_atomically
from callbacks.sample_quality import PRETRAINED_DIR
from core.errors import ConfigError
from lightning_modules.components.lenet import LeNet


class ExportClassifier(L.Callback):
    """When training ends, save the network and how to feed it into the run folder, as
    ``lenet_<dataset_name>.pt`` (or ``path``).

    The file holds the LeNet's arguments and weights, the class names, the normalisation its inputs
    need (the datamodule's ``mean_std`` statistics), the dataset, and whether the run completed its
    configured epochs; :func:`lightning_modules.classifier.load_classifier` rebuilds it. It never
    replaces the stored classifier under ``pretrained/`` by itself: that is
    ``python -m cli.export promote FILE``, which checks completion and test accuracy first.
    Written atomically by rank 0, from the weights of the last epoch; not under ``fast_dev_run``.

    Before training it refuses a destination inside ``pretrained/``, an explicit
    ``path`` that exists already (the default one, in the run folder, is re-written by a resumed run),
    and a folder it cannot write to, so that none of these is found only after all the training.

    Args:
        path: Output file, a new one outside ``pretrained/``; default
            ``<run folder>/lenet_<dataset_name>.pt``.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module.network, LeNet):
            raise ConfigError(
                "ExportClassifier stores LeNet networks (what the sample-quality metrics load), "
                f"not {type(pl_module.network).__name__}: remove it from trainer.callbacks."
            )
        self.destination = (
            Path(self.path).expanduser() if self.path else run_directory(trainer) / f"lenet_{trainer.datamodule.dataset_name}.pt"
        )
        normalization = getattr(trainer.datamodule, "normalization", None)
        if normalization != "mean_std":
            raise ConfigError(
                "ExportClassifier stores the mean/std input statistics: "
                f"set data.normalization='mean_std' (got {normalization!r})."
            )
        if stage == "fit":  # a test after the fit finds the export it wrote
            self.check_destination()

    def check_destination(self) -> None:
        """Refuse, before training, a destination that the export must not or cannot write."""
        named = f"ExportClassifier.path {self.path}" if self.path else f"ExportClassifier's export {self.destination}"
        elsewhere = (
            "name a new file outside it in ExportClassifier.path"
            if self.path
            else "point the run elsewhere (--trainer.default_root_dir) or name a file in ExportClassifier.path"
        )
        if self.destination.resolve().is_relative_to(PRETRAINED_DIR.resolve()):
            raise ConfigError(
                f"{named} is inside {PRETRAINED_DIR}, where only `python -m cli.export promote FILE` writes "
                "(after checking that the run completed and reached the target test accuracy): "
                f"{elsewhere}, then promote the export."
            )
        if self.path and (self.destination.exists() or self.destination.is_symlink()):
            raise ConfigError(
                f"{named} exists already, and an export never replaces a file: name a new file, "
                "or drop ExportClassifier.path (the export then goes to the run folder)."
            )
        try:
            probe_writable(self.destination.parent)
        except OSError as error:
            raise ConfigError(
                f"{named}: cannot write to {error.filename or self.destination.parent} ({error.strerror}): "
                f"set ExportClassifier.path to a file in a folder you can write, or fix that folder's permissions or free space."
            ) from None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:  # a smoke test writes no weights
            return
        datamodule = trainer.datamodule
        exported = {
            "network": pl_module.network.arguments,
            "state_dict": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
            "class_names": list(datamodule.class_names),
            "mean": list(datamodule.mean),
            "std": list(datamodule.std),
            "dataset_name": datamodule.dataset_name,
            "datamodule": f"{type(datamodule).__module__}.{type(datamodule).__qualname__}",
            "trained_epochs": trainer.current_epoch,
            "completed": trainer.max_epochs is not None
            and trainer.current_epoch >= trainer.max_epochs
            and not trainer.interrupted,
        }
        write_atomically(self.destination, lambda tmp: torch.save(exported, tmp))


def probe_writable(folder: Path) -> None:
    """Create ``folder`` and a temporary file in it, then remove both again (the folders too, if the
    probe created them): raises the ``OSError`` that writing there would raise, and leaves no trace."""
    missing = [folder, *folder.parents]
    missing = missing[: next(i for i, f in enumerate(missing) if f.is_dir())]  # the folders the probe creates
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".genlab-write-probe-")
        os.close(fd)
        os.unlink(tmp)
    finally:
        for created in missing:  # the deepest first
            try:
                created.rmdir()
            except OSError:
                break
