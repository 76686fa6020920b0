"""genlab's training and evaluation loaders for data held in memory: which indices a rank visits
(:func:`rank_shard`, :class:`EpochShardSampler`), batches indexed out of a tensor
(:class:`InMemoryBatches`), and a loader that resumes mid-epoch and is where a signalled run stops
(:class:`ResumableBatches`)."""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from core.errors import DataConfigError
from core.stopping import stop_training_loop

if TYPE_CHECKING:
    from datamodules.population import SamplerGroup


def rank_shard(indices: Tensor, rank: int, world_size: int) -> Tensor:
    """The part of ``indices`` that rank ``rank`` of ``world_size`` takes: every ``world_size``-th
    from its rank. The one rule for splitting work between ranks, so that the training data and the
    sample-quality measurements shard alike: the shards are disjoint and together cover ``indices``."""
    return indices[rank::world_size]


class EpochShardSampler:
    """Indices one rank visits in one epoch.

    Every rank draws the same permutation (seeded by ``seed`` and the epoch, so shuffling changes
    each epoch and is reproducible, also after resuming) and keeps its :func:`rank_shard` of it.
    Training shards are truncated to equal length so that no rank waits for a batch the others do
    not have; evaluation shards are padded by wrapping around instead, so that no sample is left out.
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
        return rank_shard(order[: per_rank * self.world_size], self.rank, self.world_size)


class ResumableBatches:
    """A training loader that Lightning can resume mid-epoch (its ``state_dict`` protocol).

    The state is the epoch and the number of steps handed out in it; the first iteration in that
    epoch after ``load_state_dict`` skips those steps, so a run stopped after step k of an epoch
    (Ctrl+C, SIGTERM, a step-interval checkpoint) resumes at step k + 1, not at the epoch's first
    step again. Lightning prefetches nothing from a loader that has a length, so the steps handed
    out are the steps trained. Subclasses say what one epoch's steps are, from a given one on.

    It is also where a signalled run stops (:class:`callbacks.run_guards.SaveOnInterrupt` sets
    ``stop_before_next_step``): :func:`core.stopping.stop_training_loop` instead of the next step
    puts the stop after all of the last step's work (its hooks, logging, an epoch's end) and before
    any of the next one's (its transfer, augmentation, noise).
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
                stop_training_loop()
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


def require_a_training_batch(num_samples: int, batch_size: int, world_size: int) -> None:
    """With incomplete batches dropped, a batch larger than a process's share of the training data
    would train nothing and exit as if all went well."""
    per_process = num_samples // world_size
    if per_process < batch_size:
        raise DataConfigError(
            f"data.batch_size={batch_size} is larger than the {per_process} training samples per process, "
            f"and incomplete batches are dropped: nothing would be trained. Use data.batch_size <= {per_process}."
        )
