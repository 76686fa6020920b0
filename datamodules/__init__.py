"""LightningDataModules for genlab's datasets. Each exposes ``image_shape``, ``num_classes`` and
``class_names``; see :mod:`datamodules.base` for the shared in-memory fast path."""

from datamodules.base import ImageDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.errors import CorruptDatasetError, DataConfigError, DataError, DatasetNotFoundError
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "ImageDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "CIFAR10DataModule",
    "DataError",
    "DataConfigError",
    "DatasetNotFoundError",
    "CorruptDatasetError",
]
