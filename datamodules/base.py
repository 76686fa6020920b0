"""Shared mechanics of genlab's image datamodules.

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

import itertools
import math
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from core.errors import CorruptDatasetError, DataConfigError
from datamodules.augmentation import RandomCropFlip

Normalization = Literal["symmetric", "mean_std", "unit"]
"""How ``uint8`` pixels become model inputs:

- ``symmetric``: ``x / 127.5 - 1`` in [-1, 1], the range of a ``tanh`` generator (GANs);
- ``mean_std``: per-channel ``(x / 255 - mean) / std`` with the training-set statistics (classifiers);
- ``unit``: ``x / 255`` in [0, 1] (autoencoders with a ``sigmoid`` decoder).
"""


class EpochShardSampler:
    """Indices one rank visits in one epoch.

    Every rank draws the same permutation (seeded by ``seed`` and the epoch, so shuffling changes
    each epoch and is reproducible, also after resuming) and keeps every ``world_size``-th index
    starting at its ``rank``: the shards are disjoint and together cover the data. Training shards
    are truncated to equal length so that no rank waits for a batch the others do not have;
    evaluation shards are padded by wrapping around instead, so that no sample is left out.
    """

    def __init__(self, num_samples: int, shuffle: bool, seed: int, rank: int, world_size: int, pad: bool) -> None:
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (the DistributedSampler protocol)."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.world_size)
        return self.num_samples // self.world_size

    def indices(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        per_rank = len(self)
        if self.pad and per_rank * self.world_size > self.num_samples:
            order = order.repeat(math.ceil(per_rank * self.world_size / self.num_samples))
        return order[self.rank : per_rank * self.world_size : self.world_size]


class ResumableBatches:
    """A training loader that Lightning can resume mid-epoch (its ``state_dict`` protocol).

    The state is the epoch and the number of steps handed out in it; the first iteration in that
    epoch after ``load_state_dict`` skips those steps, so a run stopped after step k of an epoch
    (Ctrl+C, SIGTERM, a step-interval checkpoint) resumes at step k + 1, not at the epoch's first
    step again. Lightning prefetches nothing from a loader that has a length, so the steps handed
    out are the steps trained. Subclasses say what one epoch's steps are, from a given one on.

    It is also where a signalled run stops (:class:`callbacks.run_guards.SaveOnInterrupt` sets
    ``stop_before_next_step``): Lightning's ``SIGTERMException`` instead of the next step puts the
    stop after all of the last step's work (its hooks, logging, an epoch's end) and before any of
    the next one's (its transfer, augmentation, noise).
    """

    sampler: EpochShardSampler | SamplerGroup

    def __init__(self) -> None:
        self.epoch, self.steps_taken = 0, 0
        self.resume_at: dict[str, int] | None = None
        self.stop_before_next_step = False

    @abstractmethod
    def steps(self, first: int) -> Iterator:
        """The epoch's training steps, from step ``first`` (0-based) on."""

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_at = state

    def __iter__(self) -> Iterator:
        # A generator: this runs at the first ``next``, after Lightning has set the sampler's epoch.
        self.epoch, self.steps_taken = self.sampler.epoch, 0
        if self.resume_at is not None and self.resume_at["epoch"] == self.epoch:
            self.steps_taken = self.resume_at["steps_taken"]
        self.resume_at = None
        for step in self.steps(self.steps_taken):
            if self.stop_before_next_step:
                self.stop_before_next_step = False
                raise SIGTERMException
            self.steps_taken += 1
            yield step


class InMemoryBatches(ResumableBatches):
    """An iterable of ``(uint8 images, int64 labels)`` batches indexed out of two tensors.

    Lightning accepts any sized iterable as a dataloader; it calls ``sampler.set_epoch`` on it
    like on a ``DataLoader``, and does not replace its sampler under DDP, because this sampler
    already shards by rank.

    With ``minibatches_per_step = s > 1`` it yields lists of up to ``s`` consecutive batches
    instead, the same batches in the same order: a model that takes one optimizer step per
    minibatch (:class:`~lightning_modules.components.adversarial.AdversarialModule`) then pays
    Lightning's per-batch work once per ``s`` steps, which is most of a tiny network's step.
    """

    #: Batches are slices of the sampler's index list, not drawn by a batch sampler; Lightning's
    #: evaluation loops read this attribute (as on a ``DataLoader``) to see whether data is shuffled.
    batch_sampler = None

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        sampler: EpochShardSampler,
        drop_last: bool,
        minibatches_per_step: int = 1,
    ):
        super().__init__()
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.sampler = sampler
        self.drop_last = drop_last
        self.minibatches_per_step = minibatches_per_step

    def num_minibatches(self) -> int:
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(len(self.sampler) / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.num_minibatches() / self.minibatches_per_step)

    def minibatches(self, first: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's minibatches from minibatch ``first`` (0-based) on."""
        indices = self.sampler.indices().to(self.images.device)
        for start in range(first * self.batch_size, self.num_minibatches() * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]

    def steps(self, first: int) -> Iterator[tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]]]:
        minibatches = self.minibatches(first * self.minibatches_per_step)
        if self.minibatches_per_step == 1:
            yield from minibatches
            return
        while group := list(itertools.islice(minibatches, self.minibatches_per_step)):
            yield group


#: How far apart the shuffle seeds of two runs of a population are (:func:`data_order_seed`): epoch e
#: of a run draws its order with seed ``shuffle_seed + e``, so no two runs share an epoch's order
#: within a million epochs.
DATA_ORDERS_APART = 1_000_003


def data_order_seed(shuffle_seed: int, run_seed: int) -> int:
    """The ``data.shuffle_seed`` of a single run that visits the training data in the order a
    population's run of seed ``run_seed`` does."""
    return shuffle_seed + DATA_ORDERS_APART * run_seed


class SamplerGroup:
    """Several samplers that Lightning sets to each epoch as one (``set_epoch``)."""

    def __init__(self, samplers: list[EpochShardSampler]) -> None:
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.samplers[0].epoch


class PopulationBatches(ResumableBatches):
    """Training batches of a population of runs trained at once (:class:`lightning_modules.OptimizerStudy`),
    one data order per seed: per step the next minibatch of every order, stacked as ``uint8`` images
    ``(S, B, C, H, W)`` and labels ``(S, B)``. Order ``s`` is exactly the order of a single run with
    ``data.shuffle_seed = data_order_seed(shuffle_seed, seeds[s])``.
    """

    batch_sampler = None

    def __init__(self, orders: list[InMemoryBatches]) -> None:
        super().__init__()
        self.orders = orders
        self.sampler = SamplerGroup([order.sampler for order in orders])

    def __len__(self) -> int:
        return len(self.orders[0])

    def steps(self, first: int) -> Iterator[tuple[Tensor, Tensor]]:
        for minibatches in zip(*(order.minibatches(first) for order in self.orders)):
            images, labels = zip(*minibatches)
            yield torch.stack(images), torch.stack(labels)


def is_minibatch_group(batch) -> bool:
    """Whether a training batch is a group of minibatches (a list of ``(inputs, labels)`` pairs, from
    ``minibatches_per_step > 1``) rather than one ``(inputs, labels)`` minibatch."""
    return isinstance(batch, list) and isinstance(batch[0], (tuple, list))


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


def require_a_training_batch(num_samples: int, batch_size: int, world_size: int) -> None:
    """With incomplete batches dropped, a batch larger than a process's share of the training data
    would train nothing and exit as if all went well."""
    per_process = num_samples // world_size
    if per_process < batch_size:
        raise DataConfigError(
            f"data.batch_size={batch_size} is larger than the {per_process} training samples per process, "
            f"and incomplete batches are dropped: nothing would be trained. Use data.batch_size <= {per_process}."
        )


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
        data_on_device: With ``in_memory``, keep the tensors on the training device (GPU) too.
        num_workers: Worker processes of the per-item ``DataLoader`` (``in_memory: false`` only).
        minibatches_per_step: Training minibatches handed to the model per training step, as a list
            (in-memory path only): for models that take one optimizer step per minibatch (the GANs,
            the classifier), the same updates in the same order with Lightning's per-step work paid
            once per group — most of the time of a small network at a small batch size.
        augmentation: Applied to each training batch on the device, before normalisation (e.g.
            :class:`~datamodules.augmentation.RandomCropFlip`); ``None``: the images as they are.
        download: Try to download missing files (needs network); otherwise fail with instructions.
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
        data_on_device: bool = False,
        num_workers: int = 0,
        minibatches_per_step: int = 1,
        augmentation: RandomCropFlip | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        if batch_size <= 0:
            raise DataConfigError(f"data.batch_size must be a positive integer, got {batch_size}.")
        if num_workers < 0:
            raise DataConfigError(f"data.num_workers must be >= 0 (0 loads in the main process), got {num_workers}.")
        if val_size < 0:
            raise DataConfigError(f"data.val_size must be >= 0, got {val_size}.")
        if minibatches_per_step < 1 or (minibatches_per_step > 1 and not in_memory):
            raise DataConfigError(f"data.minibatches_per_step must be >= 1, and 1 with in_memory: false; got {minibatches_per_step} (in_memory: {in_memory}).")
        if normalization not in Normalization.__args__:
            raise DataConfigError(f"data.normalization must be one of {Normalization.__args__}, got {normalization!r}.")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.normalization = normalization
        self.augmentation = augmentation
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
        """``mean`` and ``std`` shaped ``(C, 1, 1)`` to broadcast over a batch."""
        return torch.tensor(self.mean, device=device).view(-1, 1, 1), torch.tensor(self.std, device=device).view(-1, 1, 1)

    # --- Lightning hooks -----------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.hparams.download:
            self.download_split_files()

    def setup(self, stage: str) -> None:
        self._load_splits()
        model = self.trainer.lightning_module if self.trainer is not None else None
        if stage == "fit" and self.hparams.minibatches_per_step > 1 and model is not None and not getattr(model, "accepts_minibatch_groups", False):
            raise DataConfigError(
                f"data.minibatches_per_step={self.hparams.minibatches_per_step} hands several minibatches to one training step, but "
                f"{type(model).__name__} takes one batch per step: set data.minibatches_per_step to 1."
            )
        if stage == "fit" and getattr(model, "data_order_seeds", None) is not None and (not self.hparams.in_memory or self.augmentation is not None):
            raise DataConfigError(
                f"{type(model).__name__} trains a population of runs from batches stacked in memory: set data.in_memory: true and data.augmentation: null."
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
            raise DataConfigError(f"data.val_size={self.hparams.val_size} leaves no training data (the train split has {num_train}).")
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
        if self.hparams.data_on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            images, labels = images.to(device), labels.to(device)
            self._splits[split] = (images, labels)
        rank, world_size = self._rank_and_world_size()

        def batches(shuffle_seed: int) -> InMemoryBatches:
            sampler = EpochShardSampler(len(labels), shuffle, shuffle_seed, rank, world_size, pad=not drop_last)
            group = self.hparams.minibatches_per_step if split == "train" else 1
            return InMemoryBatches(images, labels, self.batch_size, sampler, drop_last, group)

        population_seeds = getattr(self.trainer.lightning_module if self.trainer else None, "data_order_seeds", None)
        if split == "train" and population_seeds is not None:
            return PopulationBatches([batches(data_order_seed(self.hparams.shuffle_seed, seed)) for seed in population_seeds])
        return batches(self.hparams.shuffle_seed)
