"""The seed of each training epoch of a run: one formula for ``callbacks.EpochSeed`` (torch's global
generator of a single run) and for a population's members (``lightning_modules.components.population``),
so that a member draws the numbers its single run draws."""

from __future__ import annotations


def epoch_seed(base: int, epoch: int, rank: int) -> int:
    """A seed for (base seed, epoch, DDP rank): distinct across epochs and ranks, the same on a rerun."""
    return (base + 1_000_003 * epoch + 998_244_353 * rank) % 2**63
