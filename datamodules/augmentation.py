"""Training-batch augmentation, applied to whole batches on the training device.

torchvision's ``v2.RandomCrop`` and ``v2.RandomHorizontalFlip`` draw one crop and one flip for a
whole batch tensor; per-image draws would need per-item transforms behind worker processes. A class
here draws per image and applies the draws to the batch at once, with the global torch RNG (seeded
per epoch and rank by :class:`callbacks.EpochSeed`, so runs repeat and resume exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import DataConfigError


class RandomCropFlip:
    """Per image: pad by ``padding`` zero pixels on every side, crop back to the original size at a
    uniformly random offset, and mirror left-right with probability 1/2 (``flip``) — the standard
    CIFAR-10 augmentation (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``).

    Args:
        padding: Zero pixels added on each side before cropping (0: no crop).
        flip: Also mirror half of the images.
    """

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if padding < 0:
            raise DataConfigError(f"RandomCropFlip.padding must be >= 0, got {padding}.")
        self.padding = padding
        self.flip = flip

    def __call__(self, images: Tensor) -> Tensor:
        """``(N, C, H, W)`` images (any dtype; padding is 0, i.e. black for uint8 pixels)."""
        n, channels, height, width = images.shape
        device = images.device
        offsets = torch.randint(0, 2 * self.padding + 1, (2, n), device=device)
        rows = offsets[0, :, None] + torch.arange(height, device=device)  # (N, H) rows of the padded image
        cols = offsets[1, :, None] + torch.arange(width, device=device)  # (N, W)
        if self.flip:
            mirrored = torch.rand(n, device=device) < 0.5
            cols = torch.where(mirrored[:, None], cols.flip(1), cols)
        padded = F.pad(images, (self.padding,) * 4)
        index = torch.arange(n, device=device)[:, None, None, None]
        return padded[
            index, torch.arange(channels, device=device)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
        ]
