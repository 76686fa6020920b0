"""P members of a population (``model.seeds``) against P genlab runs one after another, side by side in one run.

Each case trains one configuration as a single run and as a population of P members, through Lightning as
``train.py`` would (Trainer, module, datamodule; no logger, checkpoints or callbacks but the timer). A run's
cost does not depend on its seed, so the sequential time is P times one run's. Printed per case: member
iterations per second of both (an iteration: one critic or discriminator update, and G's when it steps;
median of ``--repeats`` interleaved rounds, start-up and the first ``--warmup`` training steps excluded) and
the speed-up population/sequential against its target (docs/benchmarks.md has the recorded figures)::

    python benchmarks/adversarial_population.py [--steps 300] [--repeats 3] [--cases ring8-gp ...]

Cases (issue #33): the ring of 8 with the 3 x 128 WGAN and the gradient penalty or the hand-written spectral
norm, P = 10 (target >= 5x); the grid of 25 with 3 x 512, spectral norm, P = 3 (reported); the MNIST GAN at
its default widths, P = 3 (reported: on a CPU its matmuls are the cost, which stacking does not shrink); the VAE
at its defaults and batch 20 (the IWAE paper's), P = 5 (target >= 3x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch

from benchmarks.gan_throughput import IterationTimer
from cli.process_setup import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from datamodules import Grid25DataModule, MNISTDataModule, Ring8DataModule
from lightning_modules import GAN, VAE, WGAN
from lightning_modules.components.lipschitz import GradientPenalty, SpectralNormalization

DEEP = {"generator_hidden": [128] * 3, "critic_hidden": [128] * 3}
WIDE = {"generator_hidden": [512] * 3, "critic_hidden": [512] * 3}

#: name: (model factory, datamodule factory taking population seeds or None, members, target speed-up or None)
CASES: dict[str, tuple[Callable, Callable, int, float | None]] = {
    "ring8-gp": (partial(WGAN, **DEEP, lipschitz=GradientPenalty()), partial(Ring8DataModule, num_samples=50_000), 10, 5.0),
    "ring8-sn": (partial(WGAN, **DEEP, lipschitz=SpectralNormalization()), partial(Ring8DataModule, num_samples=50_000), 10, 5.0),
    "grid25-wide-sn": (
        partial(WGAN, **WIDE, lipschitz=SpectralNormalization()),
        partial(Grid25DataModule, num_samples=50_000),
        3,
        None,
    ),
    "mnist-gan": (GAN, partial(MNISTDataModule, data_dir=str(ROOT / "data"), val_size=0), 3, None),
    "vae-batch20": (
        VAE,
        partial(MNISTDataModule, data_dir=str(ROOT / "data"), batch_size=20, normalization="unit", val_size=0),
        5,
        3.0,
    ),
}


def iterations_per_second(model: L.LightningModule, datamodule: L.LightningDataModule, args: argparse.Namespace) -> float:
    """Training steps per second through Lightning, after ``args.warmup`` steps (one update per step here)."""
    timer = IterationTimer(args.warmup, args.steps)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule)
    return timer.timed / timer.seconds


def single(model: Callable, data: Callable, args: argparse.Namespace) -> float:
    """Iterations per second of one run: P runs one after another take P times as long."""
    L.seed_everything(0, verbose=False)
    return iterations_per_second(model(), data(), args)


def population(model: Callable, data: Callable, members: int, args: argparse.Namespace) -> float:
    """Member iterations per second of a population of ``members``."""
    L.seed_everything(0, verbose=False)
    seeds = list(range(members))
    return members * iterations_per_second(model(seeds=seeds), data(population_seeds=seeds), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} timed steps, median of {args.repeats}")
    for name in args.cases:
        model, data, members, target = CASES[name]
        rounds = [(single(model, data, args), population(model, data, members, args)) for _ in range(args.repeats)]
        alone, together = (statistics.median(r[i] for r in rounds) for i in (0, 1))
        goal = f"(target >= {target}x)" if target else "(reported)"
        print(
            f"{name:<16} P = {members:>2}: sequential {alone:8.1f} member-it/s, population {together:8.1f} member-it/s, "
            f"speed-up {together / alone:5.2f}x {goal}",
            flush=True,
        )


if __name__ == "__main__":
    main()
