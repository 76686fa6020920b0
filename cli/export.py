"""Promote an exported classifier to the stored domain classifier of the sample-quality metrics only
when it has earned it; store a trained VAE's encoder as the second feature space of precision,
recall, density and coverage; write one member of a population as a single run's checkpoint.

    python -m cli.export promote runs/classifier_mnist/version_N/lenet_mnist.pt [--data-dir data]
    python -m cli.export encoder runs/vae_mnist/version_N/checkpoints/last.ckpt [--dataset mnist]
    python -m cli.export member runs/<population run>/version_N/checkpoints/last.ckpt P [--out FILE]

A fault the user can fix (a missing or wrong file, an export that has not earned its place, a
stored file that cannot be written) ends with exit code 2 and one last stderr line
``genlab: error: ...`` naming the file and the fix; the stored files are then as they were.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import torch

from callbacks.run_outputs import write_atomically
from callbacks.sample_quality import PRETRAINED_DIR
from cli.population_member import member_checkpoint
from core.errors import ConfigError, DataError
from core.torch_files import torch_load
from datamodules.population import data_order_seed
from lightning_modules.classifier import load_classifier
from lightning_modules.vae import VAE

#: Test accuracy an export must reach to replace the stored classifier (the targets of configs/classifier_*.yaml).
TARGET_ACCURACY = {"mnist": 0.990, "fashion_mnist": 0.900}
#: What :class:`callbacks.ExportClassifier` writes, and what promote is given.
EXPORT = (
    "an export of callbacks.ExportClassifier "
    "(the run folder's lenet_<dataset>.pt, e.g. runs/classifier_mnist/version_N/lenet_mnist.pt)"
)
EXPORT_KEYS = ("network", "state_dict", "class_names", "mean", "std")
#: What encoder is given.
VAE_CHECKPOINT = "a checkpoint of a VAE run (configs/vae_mnist.yaml), e.g. runs/vae_mnist/version_N/checkpoints/last.ckpt"
VAE_HPARAMS = ("latent_dim", "hidden", "activation", "sample_shape")


def torch_file(path: Path, expected: str, weights_only: bool) -> Any:
    """What ``torch.load`` reads from ``path``, or one error naming the file and what it should be."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: give {expected}.")
    try:
        return torch_load(path, weights_only)
    except OSError:
        raise  # permissions: main names the file
    except Exception:  # noqa: BLE001 - UnpicklingError, a truncated archive, an empty file: not written by torch.save
        raise ConfigError(
            f"{path} is not a file torch.save wrote{' with tensors and plain values only' if weights_only else ''}: "
            f"give {expected}."
        ) from None


def read_export(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The exported LeNet and its metadata (:func:`load_classifier`), once the file is known to be an export."""
    saved = torch_file(path, EXPORT, weights_only=True)
    if isinstance(saved, dict) and "pytorch-lightning_version" in saved:
        beside = sorted(path.parent.parent.glob("lenet_*.pt")) if path.parent.name == "checkpoints" else []
        export = beside[0] if beside else "the lenet_<dataset>.pt that ExportClassifier wrote into the run folder"
        raise ConfigError(f"{path} is a Lightning checkpoint, not an export of callbacks.ExportClassifier: promote {export}.")
    if isinstance(saved, dict) and isinstance(saved.get("network"), dict) and "latent_dim" in saved["network"]:
        raise ConfigError(f"{path} is a VAE encoder (what `python -m cli.export encoder` stores), not {EXPORT}.")
    missing = [key for key in EXPORT_KEYS if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise ConfigError(f"{path} is not {EXPORT}: it has no {', '.join(missing)}.")
    return load_classifier(path)  # weights of another network: one line from there


@torch.no_grad()
def test_accuracy(path: Path, datamodule: L.LightningDataModule) -> float:
    """Accuracy of an exported classifier on the datamodule's whole test split."""
    network, _ = read_export(path)
    datamodule.setup("test")
    images, labels = datamodule.split_tensors("test")
    predictions = torch.cat([network(datamodule.normalize(chunk)).argmax(1) for chunk in images.split(1000)])
    return (predictions == labels).float().mean().item()


def store(stored: Path, write) -> None:
    """``write_atomically``; a write that fails (read-only folder, full disk) leaves the stored file as it was."""
    try:
        write_atomically(stored, write)
    except OSError as error:
        raise ConfigError(
            f"{stored} cannot be written ({error.strerror or error}); it is as it was. "
            f"Fix the permissions of {stored.parent} or free space, then run again."
        ) from None


def promote(exported: Path, data_dir: str) -> str:
    """Replace the stored classifier of the export's dataset by the export, if its run completed
    and it reaches the target test accuracy; returns what happened, old and new accuracy."""
    _, meta = read_export(exported)
    if "dataset_name" not in meta or not meta.get("completed"):
        raise ConfigError(
            f"{exported} comes from a run that did not complete its configured epochs (or from an older genlab): "
            "train to the end, then promote."
        )
    dataset = meta["dataset_name"]
    stored = PRETRAINED_DIR / f"lenet_{dataset}.pt"
    if exported.resolve() == stored.resolve():
        raise ConfigError(
            f"{exported} is the stored classifier already: promote an export from a run folder, "
            f"e.g. runs/classifier_{dataset}/version_N/lenet_{dataset}.pt."
        )
    try:
        module_name, class_name = meta["datamodule"].rsplit(".", 1)
        datamodule_class = getattr(importlib.import_module(module_name), class_name)
    except (KeyError, AttributeError, ValueError, ImportError):
        raise ConfigError(
            f"{exported} names the datamodule {meta.get('datamodule')!r}, which this genlab does not have: "
            "export it again with this genlab."
        ) from None
    datamodule = datamodule_class(data_dir=data_dir, normalization="mean_std", val_size=0)
    new = test_accuracy(exported, datamodule)
    try:
        old = f"{test_accuracy(stored, datamodule):.2%}" if stored.is_file() else "none"
    except ConfigError:
        old = "unreadable"
    target = TARGET_ACCURACY.get(dataset, 0.0)
    if new < target:
        raise ConfigError(
            f"{exported}: test accuracy {new:.2%} is below the target {target:.1%}; {stored} kept (test accuracy {old})."
        )
    store(stored, lambda tmp: shutil.copyfile(exported, tmp))
    return f"{stored} replaced: test accuracy {old} -> {new:.2%}"


def encoder_export(vae: VAE, dataset_name: str, source: str) -> dict[str, Any]:
    """What :func:`lightning_modules.vae.load_encoder` rebuilds a VAE's encoder from: its architecture, weights and origin."""
    hp = vae.hparams
    architecture = {
        "sample_shape": list(hp.sample_shape),
        "latent_dim": hp.latent_dim,
        "hidden": list(hp.hidden),
        "activation": hp.activation,
    }
    weights = {
        name.removeprefix("encoder."): value.detach().cpu()
        for name, value in vae.state_dict().items()
        if name.startswith("encoder.")
    }
    return {"network": architecture, "state_dict": weights, "dataset_name": dataset_name, "source": source}


def store_encoder(checkpoint: Path, dataset: str | None = None) -> str:
    """Write a VAE checkpoint's encoder to ``pretrained/vae_encoder_<dataset>.pt``,
    where :class:`callbacks.SampleQuality` finds it; returns what was written. The dataset is the
    one of the run's datamodule (recorded by train.py) unless given."""
    saved = torch_file(checkpoint, VAE_CHECKPOINT, weights_only=False)
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{checkpoint} is not a Lightning checkpoint (it holds a {type(saved).__name__}): give {VAE_CHECKPOINT}."
        )
    if "network" in saved and "hyper_parameters" not in saved:
        raise ConfigError(
            f"{checkpoint} is a network's export (what ExportClassifier or this command writes), "
            f"not a Lightning checkpoint: give {VAE_CHECKPOINT}."
        )
    hyper_parameters = saved.get("hyper_parameters") or {}
    if not isinstance(hyper_parameters, dict) or not set(VAE_HPARAMS) <= hyper_parameters.keys():
        raise ConfigError(
            f"{checkpoint} is not a checkpoint of a VAE (configs/vae_mnist.yaml): "
            f"its hyperparameters lack {', '.join(VAE_HPARAMS[:-1])} or {VAE_HPARAMS[-1]}."
        )
    if dataset is None:
        class_path = (saved.get("datamodule_hyper_parameters") or {}).get("_class_path")
        if not class_path:
            raise ConfigError(
                f"{checkpoint} does not record its datamodule (not written by train.py): "
                "name the dataset with --dataset, e.g. --dataset mnist."
            )
        try:
            module_name, class_name = class_path.rsplit(".", 1)
            dataset = getattr(importlib.import_module(module_name), class_name).dataset_name
        except (AttributeError, ValueError, ImportError):
            raise ConfigError(
                f"{checkpoint} records the datamodule {class_path!r}, which this genlab does not have: "
                "name the dataset with --dataset, e.g. --dataset mnist."
            ) from None
    vae = VAE.load_from_checkpoint(checkpoint, map_location="cpu")
    exported = encoder_export(
        vae, dataset, f"{checkpoint} (epoch {saved.get('epoch', -1) + 1}, step {saved.get('global_step', 0)})"
    )
    stored = PRETRAINED_DIR / f"vae_encoder_{dataset}.pt"
    store(stored, lambda tmp: torch.save(exported, tmp))
    return f"{stored} written: the {vae.hparams.latent_dim}-latent encoder of {exported['source']}"


def export_member(checkpoint: Path, member: int, out: Path | None) -> str:
    """Member ``member`` of a population's checkpoint as a single run's checkpoint (cli/population_member.py)."""
    if not checkpoint.is_file():
        raise ConfigError(
            f"{checkpoint} not found: give a population run's checkpoint, e.g. runs/<run>/version_N/checkpoints/last.ckpt."
        )
    population = torch_load(checkpoint, weights_only=False)
    single = member_checkpoint(population, member, str(checkpoint))
    target = out or checkpoint.with_name(f"{checkpoint.stem}.member_{member}.ckpt")
    write_atomically(target, lambda tmp: torch.save(single, tmp))
    seed = population["hyper_parameters"]["seeds"][member]
    shuffle_seed = data_order_seed((population.get("datamodule_hyper_parameters") or {}).get("shuffle_seed", 0), seed)
    return (
        f"{target} written: member {member} (seed {seed}) as a single run's checkpoint. Resume it with the population's "
        f"config less model.init_args.seeds: --seed_everything {seed} --data.init_args.shuffle_seed {shuffle_seed} "
        f"--ckpt_path {target}"
    )


def fail(message: str) -> NoReturn:
    """Print ``genlab: error: MESSAGE`` as the last line of stderr and exit with 2 (a fault the user fixes)."""
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    """argparse's usage line, then its complaint as genlab's last line (exit code 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        fail(f"{self.prog}: {message}")


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m cli.export",
        description="Promote an exported classifier or store a VAE's encoder (for the sample-quality metrics), "
        "or write one member of a population as a single run's checkpoint.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    promote_parser = commands.add_parser("promote", help="replace pretrained/lenet_<dataset>.pt by FILE if it earned it")
    promote_parser.add_argument("file", type=Path, help="an export, e.g. runs/classifier_mnist/version_N/lenet_mnist.pt")
    promote_parser.add_argument("--data-dir", default="data", help="the datasets' folder (default: data)")
    encoder_parser = commands.add_parser(
        "encoder", help="store a VAE checkpoint's encoder as pretrained/vae_encoder_<dataset>.pt"
    )
    encoder_parser.add_argument(
        "checkpoint", type=Path, help="a VAE run's checkpoint, e.g. runs/vae_mnist/version_N/checkpoints/last.ckpt"
    )
    encoder_parser.add_argument(
        "--dataset", help="the dataset's short name (mnist, fashion_mnist); default: the one the run trained on"
    )
    member_parser = commands.add_parser("member", help="write member P of a population checkpoint as a single run's checkpoint")
    member_parser.add_argument("checkpoint", type=Path, help="a population run's checkpoint (model.seeds set)")
    member_parser.add_argument("member", type=int, help="the member's index, 0 to P - 1 (model.seeds' order)")
    member_parser.add_argument("--out", type=Path, help="the file to write (default: <checkpoint>.member_<P>.ckpt beside it)")
    args = parser.parse_args(argv)
    try:
        if args.command == "promote":
            print(promote(args.file, args.data_dir))
        elif args.command == "encoder":
            print(store_encoder(args.checkpoint, args.dataset))
        else:
            print(export_member(args.checkpoint, args.member, args.out))
    except (ConfigError, DataError) as error:
        fail(str(error))
    except OSError as error:  # reading a file it may not read; the stored files are as they were
        fail(f"{error.filename}: {error.strerror}; nothing was replaced. Fix its permissions, then run again.")


if __name__ == "__main__":
    main()
