"""LeNet-style convolutional networks (LeCun et al., 1998): the domain classifiers behind the
sample-quality metrics, the PyTorch CIFAR-10 tutorial's network, and its wider, batch-normalised
variants, all one class.

``conv -> [batch norm] -> ReLU -> 2x2 max-pool`` blocks, then fully connected hidden layers, the
last of which is the *feature layer*, and the class logits. The feature layer is what genlab's
sample-quality metrics (FID, KID) compare: a domain classifier's penultimate activations stand in
for Inception's, which cannot be downloaded here and know little about 28x28 digits anyway.

The width of the first fully connected layer follows from the input shape
(:func:`conv_output_size`), so one definition serves 28x28 and 32x32 inputs and any kernel size;
the tutorial's hard-coded ``16 * 5 * 5`` holds for 32x32 inputs and 5x5 kernels only.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from core.errors import ConfigError


def conv_output_size(size: int, kernel: int, padding: int = 0, stride: int = 1) -> int:
    """Output side of a convolution or pooling window over ``size`` pixels: floor((w - k + 2p) / s) + 1."""
    return (size - kernel + 2 * padding) // stride + 1


class LeNet(nn.Module):
    """``image -> logits``, with :meth:`features` exposing the penultimate layer.

    The defaults are the domain classifiers' (``configs/classifier_*.yaml``); the PyTorch tutorial's
    CIFAR-10 network is ``channels=(6, 16), paddings=(0, 0), hidden=(120, 84), dropout=0``.

    Args:
        sample_shape: (C, H, W) of the input.
        num_classes: Output logits.
        channels: Output channels of each conv block (LeNet-5 and the tutorial: 6, 16).
        paddings: Zero padding of each block's convolution (2 keeps a 28x28 digit at 28x28 in the
            first block, as LeNet-5's 32x32 input did).
        kernel_size: Side of every convolution kernel.
        hidden: Widths of the fully connected hidden layers; the last is the feature layer.
        dropout: Dropout before the last layer (training only).
        batch_norm: Batch normalisation after each convolution and each hidden layer.
    """

    def __init__(
        self,
        sample_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        paddings: Sequence[int] = (2, 0),
        kernel_size: int = 5,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.25,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        in_channels, height, width = sample_shape
        if len(paddings) != len(channels) or not channels or not hidden or min(*channels, *hidden) < 1:
            raise ConfigError(
                "LeNet needs one padding per conv block and positive widths: "
                f"got channels {list(channels)}, paddings {list(paddings)}, hidden {list(hidden)}."
            )
        # what rebuilds this network: callbacks.ExportClassifier stores it beside the weights
        self.arguments = {
            "sample_shape": list(sample_shape), "num_classes": num_classes,
            "channels": list(channels), "paddings": list(paddings), "kernel_size": kernel_size,
            "hidden": list(hidden), "dropout": dropout, "batch_norm": batch_norm,
        }  # fmt: skip
        blocks: list[nn.Module] = []
        for out_channels, padding in zip(channels, paddings):
            blocks.append(nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding))
            blocks += [nn.BatchNorm2d(out_channels)] if batch_norm else []
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
            height, width = (
                conv_output_size(conv_output_size(side, kernel_size, padding), 2, stride=2) for side in (height, width)
            )
            in_channels = out_channels
        if height < 1 or width < 1:
            raise ConfigError(
                f"LeNet: a {sample_shape[1]}x{sample_shape[2]} input is too small for {len(channels)} blocks "
                f"of {kernel_size}x{kernel_size} convolutions and 2x2 pooling."
            )
        self.conv = nn.Sequential(*blocks)
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_channels * height * width
        for width_out in hidden:
            layers.append(nn.Linear(width_in, width_out))
            layers += [nn.BatchNorm1d(width_out)] if batch_norm else []
            layers.append(nn.ReLU())
            width_in = width_out
        self.feature_layer = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width_in, num_classes))
        self.feature_dim = width_in

    def features(self, images: Tensor) -> Tensor:
        """``(N, feature_dim)`` penultimate activations."""
        return self.feature_layer(self.conv(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))
