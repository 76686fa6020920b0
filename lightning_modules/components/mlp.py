"""Fully connected generator and discriminator for small images (the classic MNIST GAN).

Defaults follow the widely used MNIST MLP GAN: a 100-d Gaussian latent, generator widths
256-512-1024 and discriminator widths 1024-512-256, LeakyReLU(0.2) everywhere (no dead units, so
D always passes a gradient back to G), dropout 0.3 in the discriminator (slows D down so that it
does not overpower G early), and ``tanh`` output to match data scaled to [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

OutputActivation = Literal["tanh", "sigmoid", "none"]
OUTPUT_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}
#: The pixel range each generator output activation can produce (``None``: unbounded).
OUTPUT_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "none": None}


def hidden_stack(
    in_features: int, widths: Sequence[int], negative_slope: float, dropout: float = 0.0, batch_norm: bool = False
) -> tuple[nn.Sequential, int]:
    """``Linear -> [BatchNorm] -> LeakyReLU -> [Dropout]`` per width (plain ReLU when ``negative_slope``
    is 0); returns the stack and its output size."""
    layers: list[nn.Module] = []
    for width in widths:
        layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    return nn.Sequential(*layers), in_features


class MLPGenerator(nn.Module):
    """``z -> image``: hidden stack, then a linear layer to all pixels and the output activation."""

    def __init__(
        self,
        latent_dim: int,
        sample_shape: Sequence[int],
        hidden_dims: Sequence[int] = (256, 512, 1024),
        negative_slope: float = 0.2,
        batch_norm: bool = False,
        output_activation: OutputActivation = "tanh",
    ) -> None:
        super().__init__()
        self.sample_shape = tuple(sample_shape)
        hidden, width = hidden_stack(latent_dim, hidden_dims, negative_slope, batch_norm=batch_norm)
        self.net = nn.Sequential(hidden, nn.Linear(width, math.prod(self.sample_shape)), OUTPUT_ACTIVATIONS[output_activation]())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """``image -> logit``: flattened pixels through the hidden stack to one unnormalised score."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        hidden_dims: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        hidden, width = hidden_stack(math.prod(sample_shape), hidden_dims, negative_slope, dropout=dropout)
        self.net = nn.Sequential(nn.Flatten(), hidden, nn.Linear(width, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).squeeze(1)
