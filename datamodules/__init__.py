"""LightningDataModules for genlab's datasets. The image ones expose ``image_shape``, ``num_classes``
and ``class_names`` (see :mod:`datamodules.image_datamodule` for the shared in-memory fast path); the 2-D
Gaussian mixtures of the WGAN experiments live in :mod:`datamodules.toy2d`."""

from datamodules.cifar10 import CIFAR10DataModule
from datamodules.image_datamodule import ImageDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.toy2d import GaussianMixtureDataModule, Grid25DataModule, Ring8DataModule

__all__ = [
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "GaussianMixtureDataModule",
    "Grid25DataModule",
    "ImageDataModule",
    "MNISTDataModule",
    "Ring8DataModule",
]
