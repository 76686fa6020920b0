"""Training batches of a population of runs trained at once (:class:`lightning_modules.OptimizerStudy`):
one data order per run seed, each the order that a single run of that seed visits
(:func:`data_order_seed`), so that a run inside the population sees the minibatches it would see alone."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from datamodules.loaders import EpochShardSampler, InMemoryBatches, ResumableBatches

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
    """Per step the next minibatch of every data order, stacked as ``uint8`` images ``(S, B, C, H, W)``
    and labels ``(S, B)``. Order ``s`` is exactly the order of a single run with
    ``data.shuffle_seed = data_order_seed(shuffle_seed, population_seeds[s])``.
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
