"""The standard normal of every latent-variable module: the one draw of seeded N(0, I) codes and its log density."""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def standard_normal(num_samples: int, dim: int, device: torch.device, rng: torch.Generator | None = None) -> Tensor:
    """``(num_samples, dim)`` draws of N(0, I). With ``rng``, from its state and on its device (a
    callback's fixed seed gives the same latents every time); without, from torch's global
    generator on ``device``."""
    if rng is not None:
        device = rng.device
    return torch.randn(num_samples, dim, device=device, generator=rng)


def standard_normal_log_prob(z: Tensor, event_dims: int = 1) -> Tensor:
    """log N(z; 0, I), summed over the last ``event_dims`` dimensions (one sample's coordinates)."""
    return -0.5 * (z.square() + LOG_2PI).flatten(-event_dims).sum(-1)
