"""CIFAR-10 from either of its two common on-disk forms.

- torchvision's own: ``<data_dir>/cifar-10-batches-py/`` (the pickled batches, md5-checked by
  torchvision; what ``download=True`` fetches);
- an ImageFolder tree: ``<data_dir>/CIFAR-10-images/{train,test}/<class>/*.{jpg,png}``, e.g. the
  JPEG copy in ``../shared/data/CIFAR-10-images.tar.gz``.

``layout: auto`` uses whichever is present (torchvision's first).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from core.errors import CorruptDatasetError, DatasetNotFoundError
from datamodules.image_datamodule import ImageDataModule, check_labels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _read_rgb(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as ``uint8 (H, W, 3)``; an unreadable or wrongly sized file is named."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise CorruptDatasetError(f"{path} is not a readable image ({type(error).__name__}): replace or delete it.") from None
    if pixels.shape != (shape[1], shape[2], shape[0]):
        raise CorruptDatasetError(
            f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, CIFAR-10 images are {shape[2]}x{shape[1]}: "
            "replace or delete it."
        )
    return pixels


def _read_cache(path: Path) -> dict | None:
    """A cache of decoded images, or ``None`` (with a warning) when it cannot be read: decode again."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever torch.load raises, the images are decoded again
        rank_zero_warn(f"{path} is unreadable ({type(error).__name__}); decoding the images again.")
        return None


class CIFAR10DataModule(ImageDataModule):
    """32x32 colour images of 10 classes, 50,000 train / 10,000 test.

    Args:
        layout: ``torchvision``, ``image_folder`` or ``auto`` (see the module docstring).
        **kwargs: See :class:`~datamodules.image_datamodule.ImageDataModule`.
    """

    dataset_name = "cifar10"
    image_shape = (3, 32, 32)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    image_folder_name = "CIFAR-10-images"

    def __init__(self, *args, layout: Literal["auto", "torchvision", "image_folder"] = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.layout = layout

    @property
    def torchvision_dir(self) -> Path:
        return Path(self.data_dir) / datasets.CIFAR10.base_folder

    @property
    def image_folder_dir(self) -> Path:
        return Path(self.data_dir) / self.image_folder_name

    def resolved_layout(self) -> Literal["torchvision", "image_folder"]:
        if self.layout != "auto":
            return self.layout
        if self.torchvision_dir.is_dir():
            return "torchvision"
        if (self.image_folder_dir / "train").is_dir():
            return "image_folder"
        raise self._not_found("Dataset not found.")

    def _not_found(self, prefix: str) -> DatasetNotFoundError:
        return DatasetNotFoundError(
            f"{prefix} CIFAR-10 is in neither {self.torchvision_dir} (torchvision's pickled batches) nor "
            f"{self.image_folder_dir}/{{train,test}}/<class>/ (an image tree). Unpack one there, e.g. "
            f"`tar xzf ../shared/data/CIFAR-10-images.tar.gz -C {self.data_dir}`, "
            "or run with network access and data.download=true."
        )

    def download_split_files(self) -> None:
        if self.layout == "image_folder" or self.torchvision_dir.is_dir() or (self.image_folder_dir / "train").is_dir():
            return
        try:
            datasets.CIFAR10(self.data_dir, train=True, download=True)
        except (RuntimeError, OSError) as error:
            raise self._not_found(f"Downloading failed ({type(error).__name__}: {error}).") from None

    def _torchvision_dataset(self, train: bool, **kwargs) -> datasets.CIFAR10:
        try:
            return datasets.CIFAR10(self.data_dir, train=train, download=False, **kwargs)
        except RuntimeError as error:  # torchvision's md5 check of the pickled batches
            raise CorruptDatasetError(
                f"{self.torchvision_dir} failed torchvision's integrity check ({error}). "
                "Delete the folder and download it again, or use the image tree with data.layout=image_folder."
            ) from None

    def _image_folder_files(self, train: bool) -> tuple[list[Path], Tensor]:
        root = self.image_folder_dir / ("train" if train else "test")
        if not root.is_dir():
            raise self._not_found(f"{root} is missing.")
        found = sorted(path.name for path in root.iterdir() if path.is_dir())
        if tuple(found) != self.class_names:
            raise CorruptDatasetError(f"{root} must hold one folder per class {list(self.class_names)}, found {found}.")
        files, labels = [], []
        for label, name in enumerate(self.class_names):
            class_files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not class_files:
                raise CorruptDatasetError(
                    f"{root / name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
                    "the class would be missing from training. Unpack the dataset again."
                )
            files += class_files
            labels += [label] * len(class_files)
        return files, torch.tensor(labels, dtype=torch.long)

    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        if self.resolved_layout() == "torchvision":
            dataset = self._torchvision_dataset(train)
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.tensor(dataset.targets, dtype=torch.long)
            check_labels(labels, self.num_classes, self.torchvision_dir)
            return images, labels
        files, labels = self._image_folder_files(train)
        return self._decoded_images(files, "train" if train else "test"), labels

    def _decoded_images(self, files: list[Path], split: str) -> Tensor:
        """The split's images as ``uint8 (N, 3, 32, 32)``. Decoding 60,000 JPEGs takes half a minute
        or more, so the tensor is kept beside them (``.decoded_<split>.pt``) and reused while every
        file has the name, size and modification time it had when decoded; else decoded again."""
        cache = self.image_folder_dir / f".decoded_{split}.pt"
        key = hashlib.sha256(
            "\n".join(
                f"{path.parent.name}/{path.name} {stat.st_size} {stat.st_mtime_ns}" for path in files for stat in [path.stat()]
            ).encode()
        ).hexdigest()
        stored = _read_cache(cache) if cache.is_file() else None
        if stored is not None and stored["key"] == key and stored["images"].shape == (len(files), *self.image_shape):
            return stored["images"]
        images = (
            torch.from_numpy(np.stack([_read_rgb(path, self.image_shape) for path in files])).permute(0, 3, 1, 2).contiguous()
        )
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        try:
            torch.save({"key": key, "images": images}, tmp)
            os.replace(tmp, cache)  # whole or not at all, also with two processes writing
        except OSError as error:
            tmp.unlink(missing_ok=True)
            rank_zero_warn(f"Could not keep the decoded CIFAR-10 images in {cache} ({error}); every run decodes them again.")
        return images

    def torchvision_split(self, train: bool) -> Dataset:
        if self.resolved_layout() == "torchvision":
            return self._torchvision_dataset(train, transform=v2.PILToTensor())
        self._image_folder_files(train)  # validates the tree
        return datasets.ImageFolder(str(self.image_folder_dir / ("train" if train else "test")), transform=v2.PILToTensor())
