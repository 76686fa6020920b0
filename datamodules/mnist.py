"""MNIST and Fashion-MNIST, read from the raw IDX files by torchvision's own reader.

Expected layout (what torchvision downloads, and what ``../shared/data/*-raw.tar.gz`` unpacks to)::

    <data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
    <data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor
from torchvision import datasets
from torchvision.transforms import v2

from core.errors import CorruptDatasetError, DatasetNotFoundError
from datamodules.image_datamodule import ImageDataModule, check_labels

IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def check_idx_file(path: Path) -> None:
    """Raise :class:`CorruptDatasetError` unless ``path`` is a complete unsigned-byte IDX file.

    torchvision's reader fails on a truncated file with a bare ``AssertionError`` or a reshape
    error; checking the header against the file size names the broken file instead.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\x00\x00\x08" or not 1 <= header[3] <= 3:
            raise CorruptDatasetError(f"{path} is not an unsigned-byte IDX file (bad header). Replace it with the original file.")
        dims = [int.from_bytes(f.read(4), "big") for _ in range(header[3])]
    expected = 4 + 4 * len(dims) + math.prod(dims)
    if size != expected:
        raise CorruptDatasetError(
            f"{path} is truncated or corrupt: {size} bytes, the header promises {expected}. "
            "Delete it and unpack or download the dataset again."
        )


class MNISTDataModule(ImageDataModule):
    """Handwritten digits, 60,000 train / 10,000 test, 1x28x28."""

    torchvision_class = datasets.MNIST
    dataset_name = "mnist"
    image_shape = (1, 28, 28)
    class_names = tuple(str(digit) for digit in range(10))
    mean = (0.1307,)
    std = (0.3081,)

    @property
    def raw_dir(self) -> Path:
        return Path(self.data_dir) / self.torchvision_class.__name__ / "raw"

    def missing_files(self) -> list[str]:
        return [name for train in (True, False) for name in IDX_FILES[train] if not (self.raw_dir / name).is_file()]

    def download_split_files(self) -> None:
        if not self.missing_files():
            return
        try:
            for train in (True, False):
                self.torchvision_class(self.data_dir, train=train, download=True)
        except (RuntimeError, OSError) as error:
            reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            raise self._not_found(f"Downloading failed ({reason}).") from None

    def _not_found(self, prefix: str) -> DatasetNotFoundError:
        name = self.torchvision_class.__name__
        return DatasetNotFoundError(
            f"{prefix} {name} is missing from {self.raw_dir}: {', '.join(self.missing_files())}. "
            f"Put the uncompressed IDX files there, e.g. `tar xzf ../shared/data/{name}-raw.tar.gz -C {self.data_dir}`, "
            "or run with network access and data.download=true."
        )

    def _checked_dataset(self, train: bool, **kwargs) -> datasets.MNIST:
        if self.missing_files():
            raise self._not_found("Dataset not found.")
        images_file, labels_file = (self.raw_dir / name for name in IDX_FILES[train])
        for path in (images_file, labels_file):
            check_idx_file(path)
        dataset = self.torchvision_class(self.data_dir, train=train, download=False, **kwargs)
        if dataset.data.ndim != 3 or (1, *dataset.data.shape[1:]) != self.image_shape:
            raise CorruptDatasetError(
                f"{images_file} holds images of shape {tuple(dataset.data.shape[1:])}, {self.torchvision_class.__name__} "
                f"images are {self.image_shape[1]}x{self.image_shape[2]}: replace it with the original file."
            )
        if len(dataset.targets) != len(dataset.data):
            raise CorruptDatasetError(
                f"{labels_file} holds {len(dataset.targets)} labels for {len(dataset.data)} images in {images_file.name}: "
                "replace both with the original files."
            )
        check_labels(dataset.targets, self.num_classes, labels_file)
        return dataset

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        dataset = self._checked_dataset(train)
        return dataset.data.unsqueeze(1).contiguous(), dataset.targets.long()

    def torchvision_split(self, train: bool) -> datasets.MNIST:
        return self._checked_dataset(train, transform=v2.PILToTensor())


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's clothing images, 60,000 train / 10,000 test, 1x28x28, a drop-in for MNIST."""

    torchvision_class = datasets.FashionMNIST
    dataset_name = "fashion_mnist"
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    mean = (0.2860,)
    std = (0.3530,)
