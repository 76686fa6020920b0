"""LeNet-style convolutional network (LeCun et al., 1998), widened for today's small-image benchmarks.

Two ``5x5 conv -> ReLU -> 2x2 max-pool`` blocks, then one hidden fully connected layer, the
*feature layer*, and the class logits. The feature layer is what genlab's sample-quality metrics
(FID, KID) compare: a domain classifier's penultimate activations stand in for Inception's, which
cannot be downloaded here and know little about 28x28 digits anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class LeNet(nn.Module):
    """``image -> logits``, with :meth:`features` exposing the penultimate layer.

    Args:
        sample_shape: (C, H, W) of the input; 28x28 (MNIST) and 32x32 (CIFAR-10) both work.
        num_classes: Output logits.
        channels: Output channels of the two conv blocks (LeNet-5 had 6 and 16).
        feature_dim: Width of the hidden fully connected (feature) layer.
        dropout: Dropout before the last layer (training only).
    """

    def __init__(
        self, sample_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, channels: Sequence[int] = (32, 64), feature_dim: int = 128, dropout: float = 0.25
    ) -> None:
        super().__init__()
        in_channels, height, width = sample_shape
        first, second = channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, first, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # same size, then halved
            nn.Conv2d(first, second, 5), nn.ReLU(), nn.MaxPool2d(2),  # -4, then halved
        )  # fmt: skip
        side_h, side_w = (height // 2 - 4) // 2, (width // 2 - 4) // 2
        self.feature_layer = nn.Sequential(nn.Flatten(), nn.Linear(second * side_h * side_w, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim

    def features(self, images: Tensor) -> Tensor:
        """``(N, feature_dim)`` penultimate activations."""
        return self.feature_layer(self.conv(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))
