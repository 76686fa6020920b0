"""The one place that decides when torch's Adam runs fused, for every module that trains with it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Adam


def fused_adam(parameters: Iterable[nn.Parameter], device: torch.device, **settings: Any) -> Adam:
    """``torch.optim.Adam`` over ``parameters`` with ``settings`` (lr, betas, ...), fused (one kernel
    over all parameters, the same update as the loop over them) on the devices torch has that kernel
    for: the CPU and CUDA."""
    return Adam(parameters, fused=device.type in ("cpu", "cuda"), **settings)
