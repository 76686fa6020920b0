"""The seed of each training epoch of a run: one formula for ``callbacks.EpochSeed`` (torch's global
generator of a single run) and for a population's members (``lightning_modules.components.population``),
so that a member draws the numbers its single run draws; and measurements that draw from torch's global
generators with a seed of their own (:func:`seeded`), which neither depend on training's stream nor move it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def epoch_seed(base: int, epoch: int, rank: int) -> int:
    """A seed for (base seed, epoch, DDP rank): distinct across epochs and ranks, the same on a rerun."""
    return (base + 1_000_003 * epoch + 998_244_353 * rank) % 2**63


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """For the block, torch's CPU generator (and ``device``'s, on a GPU) seeded with ``seed``; restored after it. A
    measurement in it draws the same numbers whatever trained before, so a population's member (whose training
    draws from its own generators) measures what its run alone measures."""
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield
