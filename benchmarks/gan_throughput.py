"""GAN training throughput, side by side in one run:

  (a) plain PyTorch: the same networks, losses and Adam settings, batches indexed from the uint8
      tensor in memory, no framework, no logging — the floor that genlab's overhead is measured against;
  (b) genlab: Lightning Trainer + the GAN module + MNISTDataModule on its in-memory path;
  (c) genlab with ``in_memory: false``: torchvision's per-item MNIST dataset behind a DataLoader.

One "step" is one iteration of the algorithm: a discriminator update and a generator update
(``n_critic = 1``). Start-up (imports, reading the data, the first ``--warmup`` iterations) is
excluded. Usage::

    python benchmarks/gan_throughput.py [--steps 300] [--warmup 20] [--batch-size 64] [--workers 0] [--widths 1.0 0.25] [--repeats 3]

``--widths`` scales every hidden layer of both networks, one table per value: on a CPU the default
MLP's arithmetic dominates an iteration; a narrower one shows what the data path and the framework
cost when compute is cheap (as on a GPU).

Recorded figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch

from datamodules import MNISTDataModule
from lightning_modules import GAN


class IterationTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of batch ``warmup + steps - 1``."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup + self.steps - 1:
            self.seconds = time.perf_counter() - self.start
            trainer.should_stop = True


def gan(args: argparse.Namespace) -> GAN:
    """The default GAN, hidden widths scaled by ``args.width``."""
    defaults = inspect.signature(GAN).parameters
    return GAN(**{
        name: [max(1, round(width * args.width)) for width in defaults[name].default]
        for name in ("generator_hidden", "discriminator_hidden")
    })


def plain_pytorch(datamodule: MNISTDataModule, args: argparse.Namespace) -> float:
    model = gan(args)  # only for its networks, loss object and optimizer settings: no Trainer involved
    generator, discriminator, loss = model.generator, model.discriminator, model.adversarial_loss
    opt_g, opt_d = model.configure_optimizers()
    images = datamodule.split_tensors("train")[0]
    batch_size, latent_dim = args.batch_size, model.latent_dim
    order = torch.randperm(len(images))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        real = images[index].float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            fake = generator(torch.randn(batch_size, latent_dim))
        d_loss = loss.discriminator(discriminator(real), discriminator(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        g_loss = loss.generator(discriminator(generator(torch.randn(batch_size, latent_dim))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)
    return args.steps / (time.perf_counter() - start)


def genlab(datamodule: MNISTDataModule, args: argparse.Namespace) -> float:
    timer = IterationTimer(args.warmup, args.steps)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(gan(args), datamodule)
    return args.steps / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of variant (c)")
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25], help="scales of all hidden widths (1.0 = the default GAN)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)

    def mnist(**kwargs) -> MNISTDataModule:
        datamodule = MNISTDataModule(data_dir=args.data_dir, batch_size=args.batch_size, val_size=0, **kwargs)
        datamodule.setup("fit")
        return datamodule

    print(f"MLP GAN on MNIST, batch {args.batch_size}, {args.steps} timed iterations (1 D + 1 G step each), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    variants = {
        "(a) plain PyTorch, data in memory": lambda: plain_pytorch(mnist(), args),
        "(b) genlab, in-memory datamodule": lambda: genlab(mnist(), args),
        f"(c) genlab, torchvision per-item DataLoader ({args.workers} workers)": lambda: genlab(mnist(in_memory=False, num_workers=args.workers), args),
    }
    for width in args.widths:
        args.width = width
        # Rounds interleave the variants so that a slow spell of a shared machine hits all three.
        rounds = [{name: run() for name, run in variants.items()} for _ in range(args.repeats)]
        results = {name: statistics.median(r[name] for r in rounds) for name in variants}
        a, b, c = results.values()
        print(f"\nhidden widths x{width} (median of {args.repeats} interleaved rounds):")
        for name, steps_per_second in results.items():
            print(f"  {name:<62} {steps_per_second:8.2f} it/s")
        print(f"  ratio (b)/(a) = {b / a:.3f}   (target >= 0.90)")
        print(f"  ratio (b)/(c) = {b / c:.3f}   (target >= 1.5)")


if __name__ == "__main__":
    main()
