"""The invertible layers of a normalizing flow, each ``forward(x) -> (y, log|det dy/dx|)`` per sample and
``inverse(y) -> x``: RealNVP's affine coupling (Dinh et al., 2017), Glow's ActNorm and invertible linear mixing
(Kingma & Dhariwal, 2018), and the squeeze of RealNVP's multi-scale images. A sample is a vector ``(D,)`` or an
image ``(C, H, W)``; a layer's features are the vector's entries or the image's channels (dimension 1 of a batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from core.errors import ConfigError


def all_sum(*tensors: Tensor) -> None:
    """Each tensor summed over the processes of a distributed run, in place; nothing in a single process."""
    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.all_reduce(tensor)


def spatial_size(x: Tensor) -> int:
    """Positions per feature: 1 for a batch of vectors, H * W for a batch of images."""
    return x[0, 0].numel()


def alternating_mask(shape: Sequence[int], parity: int) -> Tensor:
    """1 on every other coordinate of a ``(D,)`` vector, starting at ``parity``: the coordinates a coupling keeps."""
    return (torch.arange(shape[0]) % 2 == parity).float()


def checkerboard_mask(shape: Sequence[int], parity: int) -> Tensor:
    """1 on the pixels (i + j) % 2 == parity of every channel of a ``(C, H, W)`` image."""
    channels, height, width = shape
    rows, columns = torch.arange(height)[:, None], torch.arange(width)[None, :]
    return ((rows + columns) % 2 == parity).float().expand(channels, height, width).clone()


def channel_mask(shape: Sequence[int], parity: int) -> Tensor:
    """1 on one half of the channels of a ``(C, H, W)`` image (the first half for parity 0)."""
    channels = shape[0]
    if channels % 2:
        raise ConfigError(
            f"a channel coupling splits the channels in halves, but the image has {channels}: squeeze it first "
            "(model.squeeze: true) or use checkerboard couplings only."
        )
    kept = (torch.arange(channels) < channels // 2) == (parity == 0)
    return kept.float()[:, None, None].expand(*shape).clone()


class AffineCoupling(nn.Module):
    """RealNVP's affine coupling: the masked part ``x_a = m * x`` passes unchanged and sets the scale and shift of
    the rest::

        s, t = conditioner(m * x);   s = scale * tanh(s)          # tanh: bounded scales, stable training
        y = m * x + (1 - m) * (x * exp(s) + t),   log|det| = sum over (1 - m) of s
        x = m * y + (1 - m) * (y - t) * exp(-s)                   # the inverse: the same s, t, from m * y = m * x

    ``conditioner`` maps a sample to twice its features (s and t); its last layer starts at zero, so a
    coupling starts as the identity."""

    def __init__(self, mask: Tensor, conditioner: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.conditioner = conditioner
        self.scale = nn.Parameter(torch.ones(mask.shape[0], *([1] * (mask.dim() - 1))))

    def scale_and_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.conditioner(kept).chunk(2, dim=1)
        free = 1 - self.mask
        return self.scale * torch.tanh(raw_scale) * free, shift * free

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kept = x * self.mask
        log_scale, shift = self.scale_and_shift(kept)
        y = kept + (1 - self.mask) * (x * log_scale.exp() + shift)
        return y, log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        kept = y * self.mask
        log_scale, shift = self.scale_and_shift(kept)
        return kept + (1 - self.mask) * (y - shift) * (-log_scale).exp()


class ActNorm(nn.Module):
    """Glow's per-feature affine map ``y = (x + bias) * exp(log_scale)``, initialised from the first batch it sees
    so that its output has zero mean and unit variance per feature (the flag is a buffer: a resumed run keeps its
    parameters rather than initialising again). ``log|det| = spatial size * sum log_scale``."""

    def __init__(self, features: int, spatial_dims: int) -> None:
        super().__init__()
        shape = (1, features, *([1] * spatial_dims))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def initialise(self, x: Tensor) -> None:
        dims = [0, *range(2, x.dim())]
        count = torch.tensor(float(x.numel() // x.shape[1]), device=x.device, dtype=x.dtype)
        total = x.sum(dim=dims, keepdim=True)
        all_sum(count, total)
        mean = total / count
        squared_deviations = (x - mean).square().sum(dim=dims, keepdim=True)
        all_sum(squared_deviations)
        std = (squared_deviations / (count - 1)).sqrt()  # unbiased, as Tensor.std
        self.bias.copy_(-mean)
        self.log_scale.copy_(-std.clamp_min(1e-6).log())
        self.initialised.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialised:
            self.initialise(x)
        y = (x + self.bias) * self.log_scale.exp()
        return y, (self.log_scale.sum() * spatial_size(x)).expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp() - self.bias


class InvertibleLinear(nn.Module):
    """Glow's invertible 1 x 1 convolution: the features at each position mixed by one matrix W (for a vector, a
    dense invertible linear map), ``y = W x``, ``log|det| = spatial size * log|det W|``; W starts as a random
    rotation. It lets every coordinate reach every other between couplings, where fixed masks would not."""

    def __init__(self, features: int, weight: Tensor | None = None) -> None:
        super().__init__()
        if weight is None:
            weight = torch.linalg.qr(torch.randn(features, features))[0]
        self.weight = nn.Parameter(weight.clone())

    def mix(self, x: Tensor, matrix: Tensor) -> Tensor:
        return torch.einsum("ij,bj...->bi...", matrix, x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.mix(x, self.weight), (torch.linalg.slogdet(self.weight)[1] * spatial_size(x)).expand(len(x))

    def inverse(self, y: Tensor) -> Tensor:
        return self.mix(y, torch.linalg.inv(self.weight))


class Squeeze(nn.Module):
    """RealNVP's squeeze: every 2 x 2 block of pixels becomes 4 channels, ``(C, H, W) -> (4C, H/2, W/2)``: a
    permutation (log|det| = 0) after which channel couplings see neighbouring pixels."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ConfigError(f"a squeeze needs an even height and width, got {height} x {width}.")
        y = x.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(batch, channels * 4, height // 2, width // 2), x.new_zeros(batch)

    def inverse(self, y: Tensor) -> Tensor:
        batch, channels, height, width = y.shape
        x = y.reshape(batch, channels // 4, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(batch, channels // 4, height * 2, width * 2)


class FlowSequence(nn.Module):
    """Layers applied in order; their log-determinants summed, their inverses applied in reverse order."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_log_det = layer(x)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


def zero_last(network: nn.Sequential) -> nn.Sequential:
    """The conditioner's last layer at zero: its coupling starts as the identity (Glow)."""
    nn.init.zeros_(network[-1].weight)
    nn.init.zeros_(network[-1].bias)
    return network


def vector_conditioner(features: int, hidden: Sequence[int]) -> nn.Sequential:
    """``(D,) -> (2D,)``: an MLP of ReLU layers, the scales' and shifts' raw values."""
    layers: list[nn.Module] = []
    width = features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return zero_last(nn.Sequential(*layers, nn.Linear(width, 2 * features)))


def image_conditioner(channels: int, hidden: Sequence[int]) -> nn.Sequential:
    """``(C, H, W) -> (2C, H, W)``: 3 x 3, 1 x 1 and 3 x 3 convolutions of ``hidden[0]`` channels (RealNVP's
    conditioners are deeper residual networks; this is their smallest form)."""
    hidden_channels = hidden[0]
    return zero_last(
        nn.Sequential(
            nn.Conv2d(channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, 2 * channels, 3, padding=1),
        )
    )
