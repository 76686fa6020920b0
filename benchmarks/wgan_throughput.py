"""WGAN on a 2-D mixture: genlab's training step against a plain loop of the same maths, side by side.

The networks are tiny (a few 128-wide layers on 2-D points), so a critic iteration is ~0.1 GFLOP
and its time goes to per-step work, not arithmetic: what the framework adds per step is the
whole difference. Variants, on the same model settings (deep: 3 x 128 in both networks, n_critic 5,
batch 256) and the same Lipschitz strategy:

  (a) plain PyTorch: the critic and generator updates of Algorithm 1, batches indexed from the
      fixed sample in memory, no framework, no logging: the floor;
  (b) genlab, one minibatch per training step (``data.minibatches_per_step: 1``);
  (c) genlab, one WGAN iteration per training step (``data.minibatches_per_step: 5`` = n_critic):
      the same updates with Lightning's per-step work paid once per 5 critic updates.

Printed: critic iterations per second, the ratios to (a) (target (c)/(a) >= 0.8) and the
projected time of 100,000 critic iterations. Start-up and the first ``--warmup`` iterations are
excluded; the variants run in interleaved rounds and the median is reported. Usage::

    python benchmarks/wgan_throughput.py [--iterations 2000] [--strategies SpectralNormalization GradientPenalty]

Recorded figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch

from cli.process_setup import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from datamodules import Ring8DataModule
from lightning_modules import WGAN
from lightning_modules.components import lipschitz

#: Targets of docs/benchmarks.md, printed beside the measured figures.
TARGETS = {"(c)/(a)": 0.8}
DEEP = [128, 128, 128]


class CriticIterationTimer(L.Callback):
    """Wall time from critic iteration ``warmup`` to ``warmup + iterations``, at training-step ends."""

    def __init__(self, warmup: int, iterations: int) -> None:
        self.warmup, self.iterations = warmup, iterations
        self.start: float | None = None

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if self.start is None and pl_module.critic_updates >= self.warmup:
            self.start, self.start_iteration = time.perf_counter(), pl_module.critic_updates
        elif self.start is not None and pl_module.critic_updates >= self.start_iteration + self.iterations:
            self.rate = (pl_module.critic_updates - self.start_iteration) / (time.perf_counter() - self.start)
            trainer.should_stop = True


def wgan(strategy: str) -> WGAN:
    return WGAN(generator_hidden=DEEP, critic_hidden=DEEP, lipschitz=getattr(lipschitz, strategy)())


def plain_pytorch(strategy: str, points: torch.Tensor, args: argparse.Namespace) -> float:
    """Critic iterations per second of Algorithm 1 in plain PyTorch."""
    model = wgan(strategy)
    generator, critic, loss, constraint = model.generator, model.discriminator, model.adversarial_loss, model.lipschitz
    opt_g, opt_d = model.configure_optimizers()
    order, m = torch.randperm(len(points)), args.batch_size
    for iteration in range(1, args.warmup + args.iterations + 1):
        if iteration == args.warmup + 1:
            start = time.perf_counter()
        real = points[order[(iteration * m) % (len(points) - m) :][:m]]
        with torch.no_grad():
            fake = generator(model.sample_latent(m))
        real_scores, fake_scores = critic(torch.cat([real, fake])).split(m)
        d_loss = loss.discriminator(real_scores, fake_scores)
        if constraint.has_penalty:
            d_loss = d_loss + constraint.penalty(critic, real, fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        constraint.after_step(critic)
        if iteration % model.n_critic == 0:
            critic.requires_grad_(False)
            g_loss = loss.generator(critic(generator(model.sample_latent(m))))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            critic.requires_grad_(True)
    return args.iterations / (time.perf_counter() - start)


def genlab(strategy: str, minibatches_per_step: int, args: argparse.Namespace) -> float:
    timer = CriticIterationTimer(args.warmup, args.iterations)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    data = Ring8DataModule(num_samples=50_000, batch_size=args.batch_size, minibatches_per_step=minibatches_per_step)
    trainer.fit(wgan(strategy), data)
    return timer.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="timed critic iterations per variant")
    parser.add_argument("--warmup", type=int, default=100, help="untimed critic iterations first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--strategies", nargs="+", default=["SpectralNormalization", "GradientPenalty"], help="Lipschitz strategies to time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    skip_cuda_probe_without_gpu()  # as train.py does
    flush_denormals_to_zero()
    L.seed_everything(0, verbose=False)
    points = Ring8DataModule(num_samples=50_000).sample(50_000, seed=0)[0]
    print(
        f"deep WGAN (3 x 128, n_critic 5) on the ring of 8, batch {args.batch_size}, {args.iterations} timed critic iterations, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for strategy in args.strategies:
        variants = {
            "(a) plain PyTorch": lambda strategy=strategy: plain_pytorch(strategy, points, args),
            "(b) genlab, 1 minibatch per training step": lambda strategy=strategy: genlab(strategy, 1, args),
            "(c) genlab, 5 minibatches (one iteration) per step": lambda strategy=strategy: genlab(strategy, 5, args),
        }
        rounds = [{name: run() for name, run in variants.items()} for _ in range(args.repeats)]
        results = {name: statistics.median(r[name] for r in rounds) for name in variants}
        a, b, c = results.values()
        print(f"\n{strategy} (median of {args.repeats} interleaved rounds):")
        for name, rate in results.items():
            print(f"  {name:<52} {rate:8.0f} critic it/s   100k in {100_000 / rate:5.0f} s   {rate / a:.2f} of (a)")
        print(f"  (b)/(a) = {b / a:.3f}, (c)/(a) = {c / a:.3f}   (target for (c)/(a) >= {TARGETS['(c)/(a)']})")


if __name__ == "__main__":
    main()
