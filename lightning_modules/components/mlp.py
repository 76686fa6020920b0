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

import torch
from torch import Tensor, nn

from core.errors import ConfigError

OutputActivation = Literal["tanh", "sigmoid", "none"]
OUTPUT_ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}
#: The pixel range each generator output activation can produce (``None``: unbounded).
OUTPUT_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "none": None}


def require_output_range(output_activation: OutputActivation, datamodule: object) -> None:
    """Refuse a generator that cannot produce the data's pixel range (it would never fool D)."""
    data_range = getattr(datamodule, "value_range", "unknown")
    output_range = OUTPUT_RANGES[output_activation]
    if data_range != "unknown" and data_range != output_range:
        fix = {(-1.0, 1.0): "tanh", (0.0, 1.0): "sigmoid", None: "none"}[data_range]
        raise ConfigError(
            f"model.output_activation={output_activation!r} produces {output_range}, but "
            f"data.normalization={datamodule.normalization!r} gives pixels in {data_range}: "
            f"set model.output_activation={fix!r}."
        )


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask costs a seventh as much on a CPU.

    The CPU draws random numbers one at a time; ``F.dropout`` draws one per element (``bernoulli_``),
    a sixth of an MNIST GAN iteration. Here each random 64-bit draw gives four 16-bit uniform
    integers, each compared with a threshold: the keep probability is ``1 - p`` to within 2e-5,
    survivors are scaled by ``1 / (1 - p)`` as usual. On a GPU, ``F.dropout`` (one fused kernel) runs.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return x * self.scaled_mask(x)

    def scaled_mask(self, x: Tensor, rng: torch.Generator | None = None) -> Tensor:
        """The CPU mask of ``x``, survivors scaled by ``1 / (1 - p)``: four 16-bit uniforms per random
        64-bit word, from ``rng`` (a population member's stream) or torch's global generator."""
        words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64, generator=rng)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= round(self.p * 65536) - 32768
        return keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def require_widths(**widths: Sequence[int]) -> None:
    """Each ``model.<key>`` a list of positive layer widths (a width of 0 builds a network that cannot learn)."""
    for key, values in widths.items():
        if not all(isinstance(width, int) and width > 0 for width in values):
            raise ConfigError(f"model.{key} must be positive layer widths, got {list(values)!r}.")


#: Hidden-layer activations of the encoder/decoder MLPs; ``identity`` makes the whole network linear.
Activation = Literal["relu", "tanh", "leaky_relu", "identity"]
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "leaky_relu": lambda: nn.LeakyReLU(0.2), "identity": nn.Identity}


def mlp(in_features: int, widths: Sequence[int], out_features: int, activation: Activation) -> nn.Sequential:
    """``Linear -> activation`` per hidden width, then a linear output layer (no activation): the
    encoders and decoders of the autoencoders and the VAE."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width), ACTIVATIONS[activation]()]
        in_features = width
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


def init_normal_(network: nn.Module, std: float) -> nn.Module:
    """Every linear layer's weights from N(0, std^2) and biases zero: the DCGAN and PacGAN init (std 0.02), in place
    of PyTorch's fan-in uniform one, for a protocol that names it."""
    if not std > 0:
        raise ConfigError(f"model.weight_init_std must be > 0 (or null: PyTorch's default init), got {std!r}.")
    for layer in network.modules():
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)
    return network


class LinearMaxout(nn.Module):
    """Maxout (Goodfellow et al., 2013): ``out_features`` units, each the largest of ``pieces`` affine maps,
    ``h_j = max_k (W_{jk} x + b_{jk})``, one ``nn.Linear`` of ``out_features * pieces`` outputs (unit j's pieces
    adjacent) and a max over them. PacGAN's discriminators use it (5 pieces) in place of a fixed activation."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        if isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 2:
            raise ConfigError(f"model.maxout_pieces must be an integer >= 2 for a maxout layer, got {pieces!r}.")
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.out_features, self.pieces)).amax(-1)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


def hidden_stack(
    in_features: int,
    widths: Sequence[int],
    negative_slope: float,
    dropout: float = 0.0,
    batch_norm: bool = False,
    maxout_pieces: int = 1,
) -> tuple[nn.Sequential, int]:
    """``Linear -> [BatchNorm] -> LeakyReLU -> [Dropout]`` per width (plain ReLU when ``negative_slope``
    is 0), or with ``maxout_pieces`` >= 2 ``LinearMaxout -> [BatchNorm] -> [Dropout]``; returns the stack and
    its output size."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout!r}.")
    layers: list[nn.Module] = []
    for width in widths:
        if maxout_pieces != 1:
            layers.append(LinearMaxout(in_features, width, maxout_pieces))
        else:
            layers.append(nn.Linear(in_features, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        if maxout_pieces == 1:
            layers.append(nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU())
        if dropout > 0:
            layers.append(Dropout(dropout))
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
        if output_activation not in OUTPUT_RANGES:
            raise ConfigError(f"model.output_activation must be one of {sorted(OUTPUT_RANGES)}, got {output_activation!r}.")
        self.sample_shape = tuple(sample_shape)
        hidden, width = hidden_stack(latent_dim, hidden_dims, negative_slope, batch_norm=batch_norm)
        self.net = nn.Sequential(hidden, nn.Linear(width, math.prod(self.sample_shape)), OUTPUT_ACTIVATIONS[output_activation]())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(*z.shape[:-1], *self.sample_shape)


class MLPDiscriminator(nn.Module):
    """``image -> logit``: flattened pixels through the hidden stack (maxout units with ``maxout_pieces`` >= 2)
    to one unnormalised score."""

    def __init__(
        self,
        sample_shape: Sequence[int],
        hidden_dims: Sequence[int] = (1024, 512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.3,
        maxout_pieces: int = 1,
    ) -> None:
        super().__init__()
        hidden, width = hidden_stack(
            math.prod(sample_shape), hidden_dims, negative_slope, dropout=dropout, maxout_pieces=maxout_pieces
        )
        # Flattened from the sample's own dimensions on: a population's leading member dimension stays.
        self.net = nn.Sequential(nn.Flatten(start_dim=-len(sample_shape)), hidden, nn.Linear(width, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images).squeeze(-1)


class ConditionalMLPGenerator(nn.Module):
    """``(z, y) -> image``: z concatenated with a learned embedding of the label y, then the
    :class:`MLPGenerator` (the conditioning of Mirza & Osindero, 2014)."""

    def __init__(
        self, num_classes: int, embedding_dim: int, latent_dim: int, sample_shape: Sequence[int], **generator_kwargs
    ) -> None:
        super().__init__()
        self.label_embedding = nn.Embedding(num_classes, embedding_dim)
        self.body = MLPGenerator(latent_dim + embedding_dim, sample_shape, **generator_kwargs)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return self.body(torch.cat([z, self.label_embedding(labels)], dim=1))


class ProjectionMLPDiscriminator(nn.Module):
    """``(image, y) -> logit`` with a projection discriminator (Miyato & Koyama, 2018)::

        D(x, y) = w . phi(x) + b + embed(y) . phi(x)

    phi is the MLP's last hidden layer. The label enters through an inner product with the
    features rather than as an extra input, so D scores "is this a real image *of class y*"
    directly: the class term rewards features typical of y and penalises those of other classes.
    phi and the head are those of an :class:`MLPDiscriminator` built from the arguments after ``num_classes``.
    """

    def __init__(self, num_classes: int, sample_shape: Sequence[int], *discriminator_args, **discriminator_kwargs) -> None:
        super().__init__()
        net = MLPDiscriminator(sample_shape, *discriminator_args, **discriminator_kwargs).net
        self.features, self.head = net[:-1], net[-1]  # Flatten -> hidden stack; the linear head
        width = self.head.in_features
        self.class_embedding = nn.Embedding(num_classes, width)
        # Same scale as the head's weights, so that at the start the class term is as large as the unconditional one.
        nn.init.uniform_(self.class_embedding.weight, -(width**-0.5), width**-0.5)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        features = self.features(images)
        return self.head(features).squeeze(1) + (self.class_embedding(labels) * features).sum(dim=1)


class MLPClassifier(nn.Sequential):
    """``image -> class logits``: the flattened pixels, ``Linear -> activation`` per hidden width, a
    linear output layer. Small and free of batch statistics and dropout, so that a population of
    them trains as one vectorised network (the optimizer study)."""

    def __init__(
        self, sample_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128,), activation: Activation = "relu"
    ) -> None:
        require_widths(hidden=hidden)
        super().__init__(nn.Flatten(), *mlp(math.prod(sample_shape), hidden, num_classes, activation))
