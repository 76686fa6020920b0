"""Do precision, recall, density and coverage behave on real images? Sets of real MNIST images that
lose classes, collapse onto one, or are degraded by noise or blur, against real test images, in two
feature spaces: the domain classifier's penultimate features (what SampleQuality uses) and raw pixels;
with ``--vae CKPT`` (a trained ``configs/vae_mnist.yaml`` run) also in two more: the VAE's posterior
means, and those beside the classifier's features (each space divided by its mean norm on the
reference, so that neither dominates the distances).

    python benchmarks/fidelity_sanity.py [--num 5000] [--vae runs/studies/vae/vae_mnist/seed_0/checkpoints/last.ckpt]

Prints one markdown table per feature space: precision / recall / density / coverage per set
(k = 3 for precision and recall, 5 for density and coverage, as in SampleQuality).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from benchmarks.fid_sanity import corrupt
from callbacks.sample_quality import ClassifierFeatures, domain_classifier
from datamodules import MNISTDataModule
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import precision_recall_density_coverage
from lightning_modules.vae import VAE


def comparison_sets(datamodule: MNISTDataModule, num: int) -> dict[str, torch.Tensor]:
    """Real training images whole, with classes dropped, collapsed onto "1", and degraded."""
    images, labels = datamodule.split_tensors("train")
    images = images.float() / 255
    train = images[:num]
    generator = torch.Generator().manual_seed(0)
    sets = {"real train": train, "classes 0-4 only": images[labels < 5][:num], 'only "1"s': images[labels == 1][:num]}
    sets |= {f"noise σ {sigma}": corrupt(train, "noise", sigma, generator) for sigma in (0.1, 0.3, 0.6)}
    sets |= {f"box blur radius {radius}": corrupt(train, "blur", radius, generator) for radius in (1, 2, 3)}
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=5000, help="images per set, and test images as the reference")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--vae", type=Path, help="a VAE checkpoint: adds its posterior means, alone and beside the classifier's features")
    args = parser.parse_args()
    datamodule = MNISTDataModule(data_dir=args.data_dir, val_size=0)
    datamodule.setup("fit")
    network, meta = load_classifier(domain_classifier(datamodule))
    classifier = ClassifierFeatures(network, meta["mean"], meta["std"])
    def classifier_features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([classifier(chunk) for chunk in images.split(1000)])

    spaces = {"classifier features": classifier_features, "raw pixels": lambda images: images.flatten(1)}
    reference = datamodule.split_tensors("test")[0][: args.num].float() / 255
    if args.vae:
        vae = VAE.load_from_checkpoint(args.vae, map_location="cpu").eval()

        def vae_means(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([vae.encode(chunk) for chunk in images.split(1000)])

        with torch.no_grad():
            scales = classifier_features(reference).norm(dim=1).mean(), vae_means(reference).norm(dim=1).mean()
        spaces["VAE posterior means"] = vae_means
        spaces["classifier features + VAE means"] = lambda images: torch.cat([classifier_features(images) / scales[0], vae_means(images) / scales[1]], dim=1)
    sets = comparison_sets(datamodule, args.num)
    with torch.no_grad():
        for space, featurize in spaces.items():
            real = featurize(reference)
            print(f"\n{space}, {args.num} test images as reference: precision / recall / density / coverage\n")
            print("| set | precision | recall | density | coverage |\n|---|---|---|---|---|")
            for name, images in sets.items():
                metrics = precision_recall_density_coverage(real, featurize(images))
                print(f"| {name} | " + " | ".join(f"{metrics[key].item():.2f}" for key in ("precision", "recall", "density", "coverage")) + " |")


if __name__ == "__main__":
    main()
