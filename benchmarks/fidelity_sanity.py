"""Do precision, recall, density and coverage behave on real images? Sets of real MNIST (or
Fashion-MNIST) images that lose classes, collapse onto one, or are degraded by noise or blur, against
real test images, in up to four feature spaces: the domain classifier's penultimate features, raw
pixels and, where a VAE encoder is stored for the dataset (MNIST:
``pretrained/vae_encoder_mnist.pt``), its posterior means and the classifier's
features beside them (each divided by its mean norm on the reference: SampleQuality's ``joint_*``).
``--gan CKPT ...`` adds rows for the samples of trained GAN checkpoints, so that they can be read
against the real sets in every space.

    python benchmarks/fidelity_sanity.py [--num 5000] [--dataset fashion_mnist]
        [--gan runs/studies/gan_mnist_100/*/seed_0/checkpoints/last.ckpt]

Prints one markdown table per feature space: precision / recall / density / coverage per set
(k = 3 for precision and recall, 5 for density and coverage, as in SampleQuality).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from benchmarks.fid_sanity import corrupt
from callbacks.sample_quality import ClassifierFeatures, domain_classifier, stored_encoder
from datamodules import FashionMNISTDataModule, MNISTDataModule
from lightning_modules import GAN
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import precision_recall_density_coverage, side_by_side
from lightning_modules.vae import load_encoder

Featurize = Callable[[torch.Tensor], torch.Tensor]


def comparison_sets(datamodule: MNISTDataModule, num: int) -> dict[str, torch.Tensor]:
    """Real training images whole, with classes dropped, collapsed onto class 1, and degraded."""
    images, labels = datamodule.split_tensors("train")
    images = images.float() / 255
    train = images[:num]
    generator = torch.Generator().manual_seed(0)
    sets = {
        "real train": train,
        "classes 0-4 only": images[labels < 5][:num],
        f'only "{datamodule.class_names[1]}"s': images[labels == 1][:num],
    }
    sets |= {f"noise σ {sigma}": corrupt(train, "noise", sigma, generator) for sigma in (0.1, 0.3, 0.6)}
    sets |= {f"box blur radius {radius}": corrupt(train, "blur", radius, generator) for radius in (1, 2, 3)}
    return sets


def gan_samples(checkpoint: Path, num: int, datamodule: MNISTDataModule) -> torch.Tensor:
    """``num`` samples of a GAN checkpoint as ``[0, 1]`` images: SampleQuality's first ``num`` latents."""
    model = GAN.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    normalization = torch.load(checkpoint, map_location="cpu", weights_only=False)["datamodule_hyper_parameters"]["normalization"]
    z, _ = model.fixed_inputs(num, torch.Generator().manual_seed(0))
    return type(datamodule)(data_dir=datamodule.data_dir, normalization=normalization, val_size=0).denormalize(
        model.generate(z, None)
    )


def run_label(checkpoint: Path) -> str:
    """``<study>: <config> <seed folder>`` for a study run's checkpoint
    (``runs/studies/<study>/<config>/seed_<s>/checkpoints/...``)."""
    run = checkpoint.parent.parent
    return f"{run.parent.parent.name}: {run.parent.name} {run.name}"


def in_chunks(featurize: Featurize) -> Featurize:
    return lambda images: torch.cat([featurize(chunk) for chunk in images.split(1000)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=5000, help="images per set, and test images as the reference")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist"], default="mnist")
    parser.add_argument(
        "--gan", type=Path, nargs="*", default=[], help="GAN checkpoints whose samples become rows of every table"
    )
    args = parser.parse_args()
    datamodule = {"mnist": MNISTDataModule, "fashion_mnist": FashionMNISTDataModule}[args.dataset](
        data_dir=args.data_dir, val_size=0
    )
    datamodule.setup("fit")
    network, meta = load_classifier(domain_classifier(datamodule))
    classifier = in_chunks(ClassifierFeatures(network, meta["mean"], meta["std"]))
    reference = datamodule.split_tensors("test")[0][: args.num].float() / 255
    sets = comparison_sets(datamodule, args.num)
    with torch.no_grad():
        sets |= {run_label(checkpoint): gan_samples(checkpoint, args.num, datamodule) for checkpoint in args.gan}
        spaces = {"classifier features": [classifier], "raw pixels": [lambda images: images.flatten(1)]}
        if encoder := stored_encoder(datamodule):
            vae = in_chunks(load_encoder(encoder)[0])
            spaces |= {"VAE posterior means": [vae], "classifier features + VAE means": [classifier, vae]}
        for space, featurizers in spaces.items():
            real = [featurize(reference) for featurize in featurizers]
            print(f"\n{space}, {args.num} test images as reference: precision / recall / density / coverage\n")
            print("| set | precision | recall | density | coverage |\n|---|---|---|---|---|")
            for name, images in sets.items():  # one space's scale changes no k-NN ball: side_by_side only matters for two
                metrics = precision_recall_density_coverage(*side_by_side(real, [featurize(images) for featurize in featurizers]))
                print(
                    f"| {name} | "
                    + " | ".join(f"{metrics[key].item():.2f}" for key in ("precision", "recall", "density", "coverage"))
                    + " |"
                )


if __name__ == "__main__":
    main()
