"""Packing (PacGAN, Lin et al. 2018): the discriminator judges m samples at once.

With pack m, D's input is m samples of one kind concatenated, ``D(x_1, ..., x_m)``: real packs of m
data points, fake packs of m generated ones. A generator that drops modes makes packs that lack
variety, which D sees in one look where it cannot in one sample; the paper shows that the loss then
penalises mode collapse in proportion to m. A batch of n samples gives n / m packs, each of m
consecutive samples, concatenated along the first dimension of a sample (a vector's coordinates, an
image's channels), so D is an ordinary network on samples of shape ``(m * c, ...)`` and m = 1 is a
plain GAN.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from core.errors import ConfigError


def require_pack(pack: int, batch_size: int | None = None) -> None:
    """``model.pack`` an integer >= 1 that divides the batch."""
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise ConfigError(f"model.pack (samples per discriminator input) must be an integer >= 1, got {pack!r}.")
    if batch_size is not None and batch_size % pack:
        raise ConfigError(f"model.pack={pack} must divide the batch size, got data.batch_size={batch_size}.")


def packed_shape(sample_shape: Sequence[int], pack: int) -> tuple[int, ...]:
    """The shape of one pack: m samples side by side along their first dimension."""
    return (pack * sample_shape[0], *sample_shape[1:])


def pack_samples(samples: Tensor, pack: int, sample_dim: int) -> Tensor:
    """``(..., n, c, ...) -> (..., n / m, m * c, ...)``: each m consecutive samples (along ``sample_dim``) as one."""
    if pack == 1:
        return samples
    count = samples.shape[sample_dim]
    if count % pack:
        raise ConfigError(f"model.pack={pack} must divide the number of samples scored at once, got {count}.")
    shape = samples.shape
    return samples.reshape(*shape[:sample_dim], count // pack, pack * shape[sample_dim + 1], *shape[sample_dim + 2 :])
