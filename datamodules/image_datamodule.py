"""The image datamodules' shared mechanics: one labelled image dataset as train / val / test splits
of ``uint8`` batches.

Small image datasets fit in memory many times over, so the default path decodes each split once
into one ``uint8`` tensor of shape ``(N, C, H, W)`` and draws batches by indexing it: no per-item
Python, no PIL, no worker processes. The tensor can live on the accelerator (``data_on_device``),
in which case a batch never crosses the PCIe bus. Batches stay ``uint8`` until
:meth:`ImageDataModule.on_after_batch_transfer`, which converts and normalises them on the device
the model runs on (4x less to copy than ``float32``).

``in_memory: false`` switches to torchvision's per-item dataset behind a standard ``DataLoader``
(Lightning then injects its ``DistributedSampler`` under DDP); it exists for comparison and for
datasets that do not fit in memory.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from core.batches import is_minibatch_group
from core.errors import CorruptDatasetError, DataConfigError
from datamodules.augmentation import RandomCropFlip
from datamodules.loaders import EpochShardSampler, InMemoryBatches, require_a_training_batch
from datamodules.population import PopulationBatches, data_order_seed

Normalization = Literal["symmetric", "mean_std", "unit"]
"""How ``uint8`` pixels become model inputs:

- ``symmetric``: ``x / 127.5 - 1`` in [-1, 1], the range of a ``tanh`` generator (GANs);
- ``mean_std``: per-channel ``(x / 255 - mean) / std`` with the training-set statistics (classifiers);
- ``unit``: ``x / 255`` in [0, 1] (autoencoders with a ``sigmoid`` decoder).
"""


def check_labels(labels: Tensor, num_classes: int, source: Path) -> None:
    """Raise :class:`CorruptDatasetError` naming ``source`` unless every label is a class index:
    a label out of range would otherwise fail deep inside the loss, or train a wrong class count."""
    outside = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(outside):
        first = outside[0].item()
        raise CorruptDatasetError(
            f"{source}: label {labels[first].item()} at index {first} is not a class (0..{num_classes - 1}); "
            f"{len(outside)} such label(s). Replace it with the original file."
        )


def keeps_data_on(device: torch.device, setting: bool | str) -> bool:
    """Whether ``data.data_on_device`` puts the in-memory splits on ``device``."""
    return device.type != "cpu" if setting == "auto" else bool(setting)


class ImageDataModule(L.LightningDataModule):
    """Train / val / test splits of a labelled image dataset, served as ``uint8`` batches.

    Subclasses say what the dataset is (class attributes) and how to read a split from disk
    (:meth:`load_split`, :meth:`torchvision_split`); everything else is shared.

    Args:
        data_dir: Root folder holding the dataset's files (see each subclass for the layout).
        batch_size: Samples per batch *per process*; under DDP the global batch is
            ``batch_size * world_size``.
        normalization: See :data:`Normalization`. ``symmetric`` for GANs, ``mean_std`` for classifiers.
        val_size: Training samples held out for validation (a seeded random split). ``0`` trains on
            all of them, as the GAN experiments do.
        split_seed: Seed of the train/val split; independent of the training seed so that the split
            stays fixed while training seeds vary.
        shuffle_seed: Seed of the per-epoch shuffling order (combined with the epoch number).
        drop_last: Drop the last incomplete training batch (keeps every optimizer step at full
            batch size).
        in_memory: Decode each split once into one tensor (fast path). ``False`` uses torchvision's
            per-item dataset behind a ``DataLoader``.
        data_on_device: With ``in_memory``, keep the tensors on the training device too, so that
            batches never cross the bus. ``auto``: on an accelerator (GPU), where a small model's step
            would otherwise wait for each batch's copy, and not on a CPU, where it is already there.
        num_workers: Worker processes of the per-item ``DataLoader`` (``in_memory: false`` only).
        minibatches_per_step: Training minibatches handed to the model per training step, as a list
            (in-memory path only): for models that take one optimizer step per minibatch (the GANs,
            the classifier), the same updates in the same order with Lightning's per-step work paid
            once per group — most of the time of a small network at a small batch size.
        augmentation: Applied to each training batch on the device, before normalisation (e.g.
            :class:`~datamodules.augmentation.RandomCropFlip`); ``None``: the images as they are.
        download: Try to download missing files (needs network); otherwise fail with instructions.
        population_seeds: The run seeds of a population of runs trained at once
            (:class:`lightning_modules.OptimizerStudy`): training batches then hold one minibatch per
            seed, each seed's from its own data order (:class:`~datamodules.population.PopulationBatches`).
            The CLI links it from ``model.init_args.seeds``; ``None``: the batches of one run.
    """

    #: Short name of the dataset in file names, e.g. the domain classifier ``lenet_<dataset_name>.pt``.
    dataset_name: str
    #: (channels, height, width) of one image.
    image_shape: tuple[int, int, int]
    #: Human-readable class names, index = label.
    class_names: tuple[str, ...]
    #: Per-channel pixel mean and std of the training set, in [0, 1] units (for ``mean_std``).
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        normalization: Normalization = "symmetric",
        val_size: int = 5000,
        split_seed: int = 42,
        shuffle_seed: int = 0,
        drop_last: bool = True,
        in_memory: bool = True,
        data_on_device: bool | Literal["auto"] = "auto",
        num_workers: int = 0,
        minibatches_per_step: int = 1,
        augmentation: RandomCropFlip | None = None,
        download: bool = True,
        population_seeds: list[int] | None = None,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise DataConfigError(f"data.batch_size must be a positive integer, got {batch_size}.")
        if num_workers < 0:
            raise DataConfigError(f"data.num_workers must be >= 0 (0 loads in the main process), got {num_workers}.")
        if val_size < 0:
            raise DataConfigError(f"data.val_size must be >= 0, got {val_size}.")
        if minibatches_per_step < 1 or (minibatches_per_step > 1 and not in_memory):
            raise DataConfigError(
                "data.minibatches_per_step must be >= 1, and 1 with in_memory: false; "
                f"got {minibatches_per_step} (in_memory: {in_memory})."
            )
        if data_on_device not in (True, False, "auto"):
            raise DataConfigError(f"data.data_on_device must be true, false or auto, got {data_on_device!r}.")
        if normalization not in Normalization.__args__:
            raise DataConfigError(f"data.normalization must be one of {Normalization.__args__}, got {normalization!r}.")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.normalization = normalization
        self.augmentation = augmentation
        self._channel_stats_on: dict[torch.device, tuple[Tensor, Tensor]] = {}  # mean_std's tensors, per device
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}  # in-memory path
        self._datasets: dict[str, Dataset] = {}  # per-item path

    # --- what a subclass provides -------------------------------------------------------------
    @abstractmethod
    def load_split(self, train: bool) -> tuple[Tensor, Tensor]:
        """Read the official train or test split: ``uint8 (N, C, H, W)`` images, ``int64 (N,)`` labels."""

    @abstractmethod
    def torchvision_split(self, train: bool) -> Dataset:
        """The same split as a per-item dataset yielding ``(uint8 (C, H, W) tensor, int label)``."""

    def download_split_files(self) -> None:
        """Fetch missing files (called once, on rank 0, when ``download`` is true)."""

    # --- what every dataset exposes ------------------------------------------------------------
    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one sample, the CLI links it to ``model.init_args.sample_shape``."""
        return self.image_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """Range of normalised pixels, or ``None`` when unbounded (``mean_std``)."""
        return {"symmetric": (-1.0, 1.0), "unit": (0.0, 1.0), "mean_std": None}[self.normalization]

    def normalize(self, images: Tensor) -> Tensor:
        """``uint8`` pixels -> model inputs, as chosen by ``normalization``."""
        images = images.float()
        if self.normalization == "symmetric":
            return images.div_(127.5).sub_(1.0)
        images = images.div_(255.0)
        if self.normalization == "mean_std":
            mean, std = self._channel_stats(images.device)
            images = images.sub_(mean).div_(std)
        return images

    def denormalize(self, images: Tensor) -> Tensor:
        """Model outputs -> [0, 1] pixels for display (inverse of :meth:`normalize`, clamped)."""
        if self.normalization == "symmetric":
            images = (images + 1.0) / 2.0
        elif self.normalization == "mean_std":
            mean, std = self._channel_stats(images.device)
            images = images * std + mean
        return images.clamp(0.0, 1.0)

    def _channel_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``mean`` and ``std`` shaped ``(C, 1, 1)`` to broadcast over a batch, made once per device: made
        per batch, each would be a copy from the host that waits for the device."""
        cache = self._channel_stats_on
        if device not in cache:
            cache[device] = (
                torch.tensor(self.mean, device=device).view(-1, 1, 1),
                torch.tensor(self.std, device=device).view(-1, 1, 1),
            )
        return cache[device]

    # --- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.download:
            self.download_split_files()

    def setup(self, stage: str) -> None:
        self._load_splits()
        population_seeds = self.hparams.population_seeds
        if stage == "fit" and population_seeds is not None and (not self.hparams.in_memory or self.augmentation is not None):
            raise DataConfigError(
                f"data.population_seeds={list(population_seeds)} trains a population of runs from batches stacked in memory: "
                "set data.in_memory: true and data.augmentation: null."
            )
        if stage == "fit" and self.hparams.drop_last:
            require_a_training_batch(self.split_size("train"), self.batch_size, self._rank_and_world_size()[1])

    def _load_splits(self) -> None:
        if self._splits or self._datasets:
            return
        if self.hparams.in_memory:
            train_images, train_labels = self.load_split(train=True)
            test_images, test_labels = self.load_split(train=False)
            train_index, val_index = self._train_val_indices(len(train_labels))
            self._splits = {
                "train": (train_images[train_index], train_labels[train_index]),
                "val": (train_images[val_index], train_labels[val_index]),
                "test": (test_images, test_labels),
            }
        else:
            full_train = self.torchvision_split(train=True)
            train_index, val_index = self._train_val_indices(len(full_train))
            self._datasets = {
                "train": Subset(full_train, train_index.tolist()),
                "val": Subset(full_train, val_index.tolist()),
                "test": self.torchvision_split(train=False),
            }

    def split_size(self, split: Literal["train", "val", "test"]) -> int:
        """Number of samples in a split (after :meth:`setup`)."""
        if self.hparams.in_memory:
            return len(self._splits[split][1])
        return len(self._datasets[split])

    def split_tensors(self, split: Literal["train", "val", "test"]) -> tuple[Tensor, Tensor]:
        """The whole split as ``uint8`` images and labels (in-memory path, after :meth:`setup`)."""
        return self._splits[split]

    def images(self, split: Literal["train", "val", "test"], indices: Tensor) -> Tensor:
        """``uint8`` images of a split at ``indices``, on either loading path (after :meth:`setup`)."""
        if self.hparams.in_memory:
            return self._splits[split][0][indices]
        dataset = self._datasets[split]
        return torch.stack([dataset[i][0] for i in indices.tolist()])

    def train_dataloader(self):
        return self._loader("train", shuffle=True, drop_last=self.hparams.drop_last)

    def val_dataloader(self):
        return self._loader("val", shuffle=False, drop_last=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False, drop_last=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if is_minibatch_group(batch):
            return [self.on_after_batch_transfer(minibatch, dataloader_idx) for minibatch in batch]
        images, labels = batch
        if self.augmentation is not None and self.trainer is not None and self.trainer.training:
            images = self.augmentation(images)
        if self.trainer is None:
            return self.normalize(images), labels
        # Lightning converts inputs to the precision's dtype (64-true: float64) before this hook, when they were still uint8.
        return self.trainer.precision_plugin.convert_input((self.normalize(images), labels))

    # --- internals -----------------------------------------------------------------------------
    def _train_val_indices(self, num_train: int) -> tuple[Tensor, Tensor]:
        if self.hparams.val_size >= num_train:
            raise DataConfigError(
                f"data.val_size={self.hparams.val_size} leaves no training data (the train split has {num_train})."
            )
        order = torch.randperm(num_train, generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_index, train_index = order[: self.hparams.val_size], order[self.hparams.val_size :]
        return train_index.sort().values, val_index.sort().values

    def _rank_and_world_size(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, split: str, shuffle: bool, drop_last: bool):
        if not self.hparams.in_memory:
            return DataLoader(
                self._datasets[split],
                batch_size=self.batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
                num_workers=self.hparams.num_workers,
                persistent_workers=self.hparams.num_workers > 0,
                generator=torch.Generator().manual_seed(self.hparams.shuffle_seed),
            )
        images, labels = self._splits[split]
        if self.trainer is not None and keeps_data_on(self.trainer.strategy.root_device, self.hparams.data_on_device):
            device = self.trainer.strategy.root_device
            images, labels = images.to(device), labels.to(device)
            self._splits[split] = (images, labels)
        rank, world_size = self._rank_and_world_size()

        def batches(shuffle_seed: int) -> InMemoryBatches:
            sampler = EpochShardSampler(len(labels), shuffle, shuffle_seed, rank, world_size, pad=not drop_last)
            group = self.hparams.minibatches_per_step if split == "train" else 1
            return InMemoryBatches(images, labels, self.batch_size, sampler, drop_last, group)

        population_seeds = self.hparams.population_seeds
        if split == "train" and population_seeds is not None:
            return PopulationBatches([batches(data_order_seed(self.hparams.shuffle_seed, seed)) for seed in population_seeds])
        return batches(self.hparams.shuffle_seed)
