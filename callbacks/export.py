"""Export a trained classifier as one small, self-describing file, and promote an export to the
stored domain classifier of the sample-quality metrics only when it has earned it; store a trained
VAE's encoder as the second feature space of precision, recall, density and coverage.

    python -m callbacks.export promote runs/classifier_mnist/version_N/lenet_mnist.pt [--data-dir data]
    python -m callbacks.export encoder runs/vae_mnist/version_N/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

import lightning as L
import torch

from callbacks.images import run_directory, write_atomically
from callbacks.sample_quality import PRETRAINED_DIR
from lightning_modules.classifier import load_classifier
from lightning_modules.components.lenet import LeNet
from lightning_modules.errors import ConfigError
from lightning_modules.vae import VAE, encoder_export

#: Test accuracy an export must reach to replace the stored classifier (the targets of configs/classifier_*.yaml).
TARGET_ACCURACY = {"mnist": 0.990, "fashion_mnist": 0.900}


class ExportClassifier(L.Callback):
    """When training ends, save the network and how to feed it into the run folder, as
    ``lenet_<dataset_name>.pt`` (or ``path``).

    The file holds the LeNet's arguments and weights, the class names, the normalisation its inputs
    need (the datamodule's ``mean_std`` statistics), the dataset, and whether the run completed its
    configured epochs; :func:`lightning_modules.classifier.load_classifier` rebuilds it. It never
    replaces the stored classifier under ``lightning_modules/pretrained/`` by itself: that is
    ``python -m callbacks.export promote FILE``, which checks completion and test accuracy first.
    Written atomically by rank 0, from the weights of the last epoch; not under ``fast_dev_run``.

    Args:
        path: Output file; default ``<run folder>/lenet_<dataset_name>.pt``.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module.network, LeNet):
            raise ConfigError(f"ExportClassifier stores LeNet networks (what the sample-quality metrics load), not {type(pl_module.network).__name__}: remove it from trainer.callbacks.")
        self.destination = Path(self.path) if self.path else run_directory(trainer) / f"lenet_{trainer.datamodule.dataset_name}.pt"
        normalization = getattr(trainer.datamodule, "normalization", None)
        if normalization != "mean_std":
            raise ConfigError(f"ExportClassifier stores the mean/std input statistics: set data.normalization='mean_std' (got {normalization!r}).")

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
            "completed": trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs and not trainer.interrupted,
        }
        write_atomically(self.destination, lambda tmp: torch.save(exported, tmp))


@torch.no_grad()
def test_accuracy(path: Path, datamodule: L.LightningDataModule) -> float:
    """Accuracy of an exported classifier on the datamodule's whole test split."""
    network, _ = load_classifier(path)
    datamodule.setup("test")
    images, labels = datamodule.split_tensors("test")
    predictions = torch.cat([network(datamodule.normalize(chunk)).argmax(1) for chunk in images.split(1000)])
    return (predictions == labels).float().mean().item()


def promote(exported: Path, data_dir: str) -> str:
    """Replace the stored classifier of the export's dataset by the export, if its run completed
    and it reaches the target test accuracy; returns what happened, old and new accuracy."""
    _, meta = load_classifier(exported)
    if "dataset_name" not in meta or not meta.get("completed"):
        raise ConfigError(f"{exported} comes from a run that did not complete its configured epochs (or from an older genlab): train to the end, then promote.")
    dataset = meta["dataset_name"]
    module_name, class_name = meta["datamodule"].rsplit(".", 1)
    datamodule = getattr(importlib.import_module(module_name), class_name)(data_dir=data_dir, normalization="mean_std", val_size=0)
    new = test_accuracy(exported, datamodule)
    stored = PRETRAINED_DIR / f"lenet_{dataset}.pt"
    old = f"{test_accuracy(stored, datamodule):.2%}" if stored.is_file() else "none"
    target = TARGET_ACCURACY.get(dataset, 0.0)
    if new < target:
        raise ConfigError(f"{exported}: test accuracy {new:.2%} is below the target {target:.1%}; {stored} kept (test accuracy {old}).")
    write_atomically(stored, lambda tmp: shutil.copyfile(exported, tmp))
    return f"{stored} replaced: test accuracy {old} -> {new:.2%}"


def store_encoder(checkpoint: Path, dataset: str | None = None) -> str:
    """Write a VAE checkpoint's encoder to ``lightning_modules/pretrained/vae_encoder_<dataset>.pt``,
    where :class:`callbacks.SampleQuality` finds it; returns what was written. The dataset is the
    one of the run's datamodule (recorded by train.py) unless given."""
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint} not found: give a checkpoint of a VAE run (configs/vae_mnist.yaml), e.g. runs/vae_mnist/version_N/checkpoints/last.ckpt.")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if not {"latent_dim", "hidden", "activation", "sample_shape"} <= saved.get("hyper_parameters", {}).keys():
        raise ConfigError(f"{checkpoint} is not a checkpoint of a VAE (configs/vae_mnist.yaml): its hyperparameters lack latent_dim, hidden, activation or sample_shape.")
    if dataset is None:
        if "_class_path" not in saved.get("datamodule_hyper_parameters", {}):
            raise ConfigError(f"{checkpoint} does not record its datamodule (not written by train.py): name the dataset with --dataset, e.g. --dataset mnist.")
        module_name, class_name = saved["datamodule_hyper_parameters"]["_class_path"].rsplit(".", 1)
        dataset = getattr(importlib.import_module(module_name), class_name).dataset_name
    vae = VAE.load_from_checkpoint(checkpoint, map_location="cpu")
    exported = encoder_export(vae, dataset, f"{checkpoint} (epoch {saved['epoch'] + 1}, step {saved['global_step']})")
    stored = PRETRAINED_DIR / f"vae_encoder_{dataset}.pt"
    write_atomically(stored, lambda tmp: torch.save(exported, tmp))
    return f"{stored} written: the {vae.hparams.latent_dim}-latent encoder of {exported['source']}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m callbacks.export", description="Promote an exported classifier, or store a VAE's encoder, for the sample-quality metrics.")
    commands = parser.add_subparsers(dest="command", required=True)
    promote_parser = commands.add_parser("promote", help="replace lightning_modules/pretrained/lenet_<dataset>.pt by FILE if it earned it")
    promote_parser.add_argument("file", type=Path, help="an export, e.g. runs/classifier_mnist/version_N/lenet_mnist.pt")
    promote_parser.add_argument("--data-dir", default="data", help="the datasets' folder (default: data)")
    encoder_parser = commands.add_parser("encoder", help="store a VAE checkpoint's encoder as lightning_modules/pretrained/vae_encoder_<dataset>.pt")
    encoder_parser.add_argument("checkpoint", type=Path, help="a VAE run's checkpoint, e.g. runs/vae_mnist/version_N/checkpoints/last.ckpt")
    encoder_parser.add_argument("--dataset", help="the dataset's short name (mnist, fashion_mnist); default: the one the run trained on")
    args = parser.parse_args(argv)
    try:
        print(promote(args.file, args.data_dir) if args.command == "promote" else store_encoder(args.checkpoint, args.dataset))
    except ConfigError as error:
        sys.exit(f"genlab: error: {error}")


if __name__ == "__main__":
    main()
