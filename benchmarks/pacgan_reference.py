"""PacGAN's 2-D training loop as its code runs it, in plain PyTorch and independent of genlab's modules: the
reference genlab's `configs/pacgan_*.yaml` runs are checked against (docs/wgan_mixtures.md).

What its code (github fjxmlzn/PacGAN, synthetic_data_experiments; Blocks and Theano) does, and genlab does not:
  - one *simultaneous* step: D's and G's gradients at the same parameters (ALI's `ali_algorithm`), then both move;
  - G run on each of the m pack slots apart, so batch norm's statistics are per slot of 100 noise vectors;
  - Blocks' batch norm: (x - mean) / sqrt(var + 1e-4), population mean and std averaged 0.95 / 0.05 for sampling;
  - Blocks' Adam with beta1 0.8 (the weight of the new gradient; PyTorch's 0.2), beta2 0.001 (PyTorch's 0.999);
  - the real packs fixed once: m bootstrap resamples of the 100,000 points side by side, shuffled every epoch.
Metrics once per 1,000 iterations (its epoch) on 2,500 samples of fixed noise with the population statistics, as its
MetricLogger: modes with one sample within 3 std (its "mode coverage"), and the share within 3 std.

    python benchmarks/pacgan_reference.py --data grid --pack 2 --iterations 3000
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mixture(data: str, num_points: int, generator: torch.Generator) -> tuple[Tensor, Tensor, float]:
    """PacGAN's ring of 8 (radius 1, std 0.01) or grid of 25 ({-4, ..., 4}^2, std 0.05): points, means, std."""
    if data == "ring":
        angles = torch.arange(8) * 2 * math.pi / 8
        means, std = torch.stack([angles.cos(), angles.sin()], 1), 0.01
    else:
        axis = torch.arange(-4.0, 5.0, 2.0)
        means, std = torch.cartesian_prod(axis, axis), 0.05
    modes = torch.randint(len(means), (num_points,), generator=generator)
    return means[modes] + std * torch.randn(num_points, 2, generator=generator), means, std


class BlocksBatchNorm(nn.Module):
    """Blocks' BatchNormalization: batch statistics in training, its population statistics (updated 0.95 / 0.05)
    for sampling; scale 1 and shift 0 at the start."""

    def __init__(self, width: int, epsilon: float = 1e-4) -> None:
        super().__init__()
        self.scale, self.shift, self.epsilon = nn.Parameter(torch.ones(width)), nn.Parameter(torch.zeros(width)), epsilon
        self.register_buffer("population_mean", torch.zeros(width))
        self.register_buffer("population_std", torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            mean, std = x.mean(0), (x.var(0, unbiased=False) + self.epsilon).sqrt()
            with torch.no_grad():
                self.population_mean.mul_(0.95).add_(0.05 * mean)
                self.population_std.mul_(0.95).add_(0.05 * std)
        else:
            mean, std = self.population_mean, self.population_std
        return (x - mean) / std * self.scale + self.shift


class Maxout(nn.Module):
    """Blocks' LinearMaxout: one linear map to width x pieces outputs, the largest of each unit's pieces."""

    def __init__(self, in_features: int, width: int, pieces: int) -> None:
        super().__init__()
        self.linear, self.width, self.pieces = nn.Linear(in_features, width * pieces), width, pieces

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(len(x), self.width, self.pieces).amax(-1)


def networks(pack: int) -> tuple[nn.Module, nn.Module]:
    """G 2 -> 4 x (400, no bias, batch norm, ReLU) -> 2; D 2m -> 3 x 200 maxout of 5 -> 1; weights N(0, 0.02^2)."""
    g_layers: list[nn.Module] = []
    for fan_in in (2, 400, 400, 400):
        g_layers += [nn.Linear(fan_in, 400, bias=False), BlocksBatchNorm(400), nn.ReLU()]
    generator = nn.Sequential(*g_layers, nn.Linear(400, 2))
    discriminator = nn.Sequential(Maxout(2 * pack, 200, 5), Maxout(200, 200, 5), Maxout(200, 200, 5), nn.Linear(200, 1))
    for layer in [*generator.modules(), *discriminator.modules()]:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return generator, discriminator


class BlocksAdam:
    """Blocks' Adam step rule (blocks/algorithms/__init__.py), its betas the weights of the new gradient."""

    def __init__(self, parameters: list[Tensor], lr: float = 1e-4, beta1: float = 0.8, beta2: float = 0.001) -> None:
        self.parameters, self.lr, self.beta1, self.beta2, self.time = parameters, lr, beta1, beta2, 0
        self.mean = [torch.zeros_like(p) for p in parameters]
        self.variance = [torch.zeros_like(p) for p in parameters]

    @torch.no_grad()
    def step(self, gradients: list[Tensor]) -> None:
        self.time += 1
        t = self.time
        step_size = self.lr * math.sqrt(1 - (1 - self.beta2) ** t) / (1 - (1 - self.beta1) ** t)
        beta_1t = 1 - (1 - self.beta1) * (1 - 1e-8) ** (t - 1)
        for parameter, mean, variance, gradient in zip(self.parameters, self.mean, self.variance, gradients):
            mean.mul_(1 - beta_1t).add_(beta_1t * gradient)
            variance.mul_(1 - self.beta2).add_(self.beta2 * gradient**2)
            parameter.sub_(step_size * mean / (variance.sqrt() + 1e-8))


def coverage(samples: Tensor, means: Tensor, std: float) -> tuple[int, float]:
    """Its MetricLogger: modes with >= 1 sample within 3 std of them (nearest mode), and the share within 3 std."""
    distance, nearest = torch.cdist(samples, means).min(1)
    good = distance < 3 * std
    return len(nearest[good].unique()), good.float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["grid", "ring"], default="grid")
    parser.add_argument("--pack", type=int, default=2, help="m: samples per D input (1: the GAN row)")
    parser.add_argument("--iterations", type=int, default=3000, help="PacGAN's epoch is 1,000; its budget 400,000")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator_rng = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    points, means, std = mixture(args.data, 100_000, generator_rng)
    packs = torch.cat([points[torch.randint(len(points), (len(points),), generator=generator_rng)] for _ in range(args.pack)], 1)
    G, D = networks(args.pack)
    d_params, g_params = list(D.parameters()), list(G.parameters())
    d_adam, g_adam = BlocksAdam(d_params), BlocksAdam(g_params)
    fixed_noise = torch.randn(2500, 2, generator=torch.Generator().manual_seed(2333))
    d_losses, started, iteration = [], time.perf_counter(), 0
    print(f"PacGAN's loop, {args.data}, pack {args.pack}, seed {args.seed}: iteration, mean D loss, modes, high quality")
    while iteration < args.iterations:
        for batch in packs[torch.randperm(len(packs))].split(100):
            fakes = torch.cat([G(torch.randn(100, 2)) for _ in range(args.pack)], 1)  # slot by slot: its batch norm
            real_scores, fake_scores = D(torch.cat([batch, fakes])).split(len(batch))
            d_loss = (F.softplus(-real_scores) + F.softplus(fake_scores)).mean()
            g_loss = F.softplus(-fake_scores).mean()  # + softplus(real_scores), which has no gradient in G
            d_gradients = torch.autograd.grad(d_loss, d_params, retain_graph=True)
            g_gradients = torch.autograd.grad(g_loss, g_params)
            d_adam.step(d_gradients)
            g_adam.step(g_gradients)
            d_losses.append(d_loss.item())
            iteration += 1
            if iteration % 1000 == 0:
                G.eval()
                with torch.no_grad():
                    modes, share = coverage(G(fixed_noise), means, std)
                G.train()
                mean_loss = sum(d_losses) / len(d_losses)
                seconds = time.perf_counter() - started
                print(f"{iteration:7d}  {mean_loss:.3f}  {modes:2d}  {100 * share:5.1f} %  ({seconds:.0f} s)")
                d_losses = []
            if iteration == args.iterations:
                break


if __name__ == "__main__":
    main()
