"""The one draw of seeded standard normal latents, for every module that samples N(0, I) codes."""

from __future__ import annotations

import torch
from torch import Tensor


def standard_normal(num_samples: int, dim: int, device: torch.device, rng: torch.Generator | None = None) -> Tensor:
    """``(num_samples, dim)`` draws of N(0, I). With ``rng``, from its state and on its device (a
    callback's fixed seed gives the same latents every time); without, from torch's global
    generator on ``device``."""
    if rng is not None:
        device = rng.device
    return torch.randn(num_samples, dim, device=device, generator=rng)
