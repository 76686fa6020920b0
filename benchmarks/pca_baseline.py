"""PCA's reconstruction error on MNIST: the floor of a linear autoencoder with the same code size.

The best rank-d affine reconstruction of the test images, x ~ mean + V V^T (x - mean) with V the top
d principal directions of the training images (``torch.linalg.svd``), as mean squared error per
[0, 1] pixel: the quantity ``Autoencoder`` logs as ``test/mse``. Usage::

    python benchmarks/pca_baseline.py [--ranks 2 8 32 128] [--data-dir data]

Recorded figures: docs/autoencoders.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from datamodules import MNISTDataModule


def pca_test_mse(datamodule: MNISTDataModule, ranks: list[int]) -> dict[int, float]:
    """Test MSE per pixel of the rank-d PCA reconstruction fitted on ``datamodule``'s training split."""
    datamodule.setup("fit")
    train, test = (datamodule.normalize(datamodule.split_tensors(split)[0]).flatten(1).double() for split in ("train", "test"))
    mean = train.mean(dim=0)
    directions = torch.linalg.svd(train - mean, full_matrices=False).Vh
    errors = {}
    for rank in ranks:
        components = directions[:rank].T
        errors[rank] = ((test - mean) @ components @ components.T + mean - test).square().mean().item()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 32, 128])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument(
        "--val-size", type=int, default=5000, help="training images held out, as in configs/data/mnist_autoencoder.yaml"
    )
    args = parser.parse_args()
    datamodule = MNISTDataModule(data_dir=args.data_dir, normalization="unit", val_size=args.val_size)
    print("| code size | PCA test MSE per pixel |\n|---|---|")
    for rank, error in pca_test_mse(datamodule, args.ranks).items():
        print(f"| {rank} | {error:.5f} |")


if __name__ == "__main__":
    main()
