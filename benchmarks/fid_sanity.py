"""Do genlab's classifier-based FID and KID behave? Real test images, corrupted more and more,
against the real training images: both should start near 0 and grow monotonically.

    python benchmarks/fid_sanity.py --out docs/figures/fid_corruption.png

Prints one table per dataset (FID, KID per corruption level) and draws FID vs strength.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
import torch.nn.functional as F

from callbacks.plots import draw_panels
from callbacks.sample_quality import ImageQualityMetrics, domain_classifier
from datamodules import FashionMNISTDataModule, MNISTDataModule

NOISE_STDS = (0.0, 0.05, 0.1, 0.2, 0.4)
BLUR_RADII = (0, 1, 2, 3, 4)


def corrupt(images: torch.Tensor, kind: str, strength: float, generator: torch.Generator) -> torch.Tensor:
    if kind == "noise":
        return (images + strength * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    radius = int(strength)
    kernel = torch.ones(1, 1, 2 * radius + 1, 2 * radius + 1) / (2 * radius + 1) ** 2
    return F.conv2d(images, kernel, padding=radius)


def measure(datamodule, num_images: int) -> dict[str, list[tuple[float, float, float]]]:
    datamodule.setup("fit")
    train = datamodule.split_tensors("train")[0][:num_images].float() / 255
    test = datamodule.split_tensors("test")[0][:num_images].float() / 255
    metrics = ImageQualityMetrics(domain_classifier(datamodule), kid_subset_size=1000)
    for chunk in train.split(1000):
        metrics.add_real(chunk)
    results = {}
    for kind, strengths in (("noise", NOISE_STDS), ("blur", BLUR_RADII)):
        generator = torch.Generator().manual_seed(0)
        rows = []
        for strength in strengths:
            for chunk in corrupt(test, kind, strength, generator).split(1000):
                metrics.add_generated(chunk)
            result = metrics.compute({"features": torch.cat([metrics.features(chunk) for chunk in train.split(1000)])})
            rows.append((strength, result["fid"].item(), result["kid"].item()))
        results[kind] = rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--num-images", type=int, default=10_000, help="real training and test images (default 10000)")
    parser.add_argument("--out", default="fid_corruption.png", help="figure path")
    args = parser.parse_args()
    datasets = {
        "MNIST": MNISTDataModule(data_dir=args.data_dir, val_size=0, download=False),
        "Fashion-MNIST": FashionMNISTDataModule(data_dir=args.data_dir, val_size=0, download=False),
    }
    panels = {}
    for name, datamodule in datasets.items():
        results = measure(datamodule, args.num_images)
        for kind, rows in results.items():
            unit = "noise std" if kind == "noise" else "box-blur radius"
            print(f"\n{name}, {kind} ({unit}): test vs train, {args.num_images} images each")
            print(f"  {'strength':>8} {'FID':>10} {'KID':>10}")
            for strength, fid, kid in rows:
                print(f"  {strength:>8} {fid:>10.2f} {kid:>10.4f}")
            panels[f"{name}: FID vs {unit}"] = {"FID": [(s, f) for s, f, _ in rows]}
    draw_panels(args.out, panels, "strength", log_scale=set(panels), max_columns=2)
    print(f"\nfigure: {args.out}")


if __name__ == "__main__":
    main()
