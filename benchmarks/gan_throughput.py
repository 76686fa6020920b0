"""GAN training throughput against the machine and against a plain loop, side by side in one run:

  (a) plain PyTorch: the same networks, losses and Adam settings and the same tricks as genlab
      (fused Adam, one discriminator pass over real and fake), batches indexed from the uint8 tensor
      in memory, no framework, no logging: the honest floor genlab's overhead is measured against;
  (b) genlab: Lightning Trainer + the GAN module + MNISTDataModule on its in-memory path, fp32;
  (c) genlab with ``in_memory: false``: torchvision's per-item MNIST dataset behind a DataLoader;
  (d) genlab in ``bf16-mixed`` precision (AMX on recent Xeons, tensor cores on GPUs);
  (e) genlab with ``data.minibatches_per_step: 10``: the same updates in the same order, ten per
      Lightning training step, so that the framework's per-step work is paid once per ten.

The machine's own rate comes first: fp32 and bf16 matmul GFLOP/s at the GAN's shapes (64 rows, the
batch; and 256 rows, where bf16 kernels reach their peak). Each variant's achieved GFLOP/s is its
iterations per second times the FLOPs of one iteration, counted by ``torch.utils.flop_counter`` on
the plain loop (forward and backward of one D and one G step), and is printed as a fraction of the
fp32 matmul rate: the share of the hardware the training loop turns into arithmetic.

One iteration = a discriminator update and a generator update (``n_critic = 1``). Start-up
(imports, reading the data, the first ``--warmup`` iterations) is excluded. Usage::

    python benchmarks/gan_throughput.py [--steps 300] [--warmup 20] [--batch-size 64] [--workers 0]
        [--widths 1.0 0.25] [--repeats 3]

``--widths`` scales every hidden layer of both networks, one table per value: on a CPU the default
MLP's arithmetic dominates an iteration; a narrower one shows what the data path and the framework
cost when compute is cheap (as on a GPU).

Recorded figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from cli.process_setup import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from datamodules import MNISTDataModule
from lightning_modules import GAN

#: Targets of docs/benchmarks.md, printed beside the measured figures.
TARGETS = {"(b)/(a)": 0.95, "(e)/(a)": 0.95, "(b) of fp32 matmul": 0.55, "(d)/(b) bf16 over fp32": 1.5, "(b)/(c)": 1.5}


def wait_for(device: torch.device | str) -> None:
    """Let the queued CUDA work finish: a GPU runs behind the host, so a clock read alone would time the queueing."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class IterationTimer(L.Callback):
    """Wall time of ``steps`` training steps after the first ``warmup`` (across epochs), or of as many as fit in
    ``seconds``: a time budget where the rate is unknown beforehand (a GPU). ``timed`` says how many were timed."""

    def __init__(self, warmup: int, steps: int, seconds: float = math.inf) -> None:
        self.warmup, self.steps, self.budget = warmup, steps, seconds
        self.done = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done == 0:
            self.first_start = time.perf_counter()
        if self.done == self.warmup:
            wait_for(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done == 0:  # with model.compile, the first batch compiles the step's functions
            wait_for(pl_module.device)
            self.first_batch_seconds = time.perf_counter() - self.first_start
        self.done += 1
        timed = self.done - self.warmup
        if timed >= self.steps or (timed > 0 and time.perf_counter() - self.start > self.budget):
            wait_for(pl_module.device)
            self.seconds, self.timed = time.perf_counter() - self.start, timed
            trainer.should_stop = True


def matmul_gflops(rows: int, dtype: torch.dtype, size: int = 1024, seconds: float = 1.0) -> float:
    """This machine's rate for ``(rows x size) @ (size x size)`` in ``dtype``: the ceiling of an MLP layer."""
    a, b = torch.randn(rows, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(10):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            a @ b
        count += 20
    return 2 * rows * size * size * count / (time.perf_counter() - start) / 1e9


def gan(args: argparse.Namespace, compile: str = "none", seeds: list[int] | None = None) -> GAN:
    """The default GAN, hidden widths scaled by ``args.width``, its step compiled with ``compile``; a population
    of one member per seed if ``seeds`` are given."""
    defaults = inspect.signature(GAN).parameters
    return GAN(
        **{
            name: [max(1, round(width * args.width)) for width in defaults[name].default]
            for name in ("generator_hidden", "discriminator_hidden")
        },
        compile=compile,
        seeds=seeds,
    )


def plain_loop(model: GAN, images: torch.Tensor, batch_size: int, device: str = "cpu"):
    """One iteration of the algorithm in plain PyTorch, as a function of the step number; model and data on ``device``."""
    model.to(device)
    images = images.to(device)
    generator, discriminator, loss = model.generator, model.discriminator, model.adversarial_loss
    opt_g, opt_d = model.configure_optimizers()
    order = torch.randperm(len(images), device=device)

    def iteration(step: int) -> None:
        index = order[(step * batch_size) % (len(images) - batch_size) :][:batch_size]
        real = images[index].float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            fake = generator(torch.randn(batch_size, model.latent_dim, device=device))
        real_scores, fake_scores = discriminator(torch.cat([real, fake])).split(batch_size)
        d_loss = loss.discriminator(real_scores, fake_scores)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        g_loss = loss.generator(discriminator(generator(torch.randn(batch_size, model.latent_dim, device=device))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        discriminator.requires_grad_(True)

    return iteration


def flops_per_iteration(datamodule: MNISTDataModule, args: argparse.Namespace) -> int:
    iteration = plain_loop(gan(args), datamodule.split_tensors("train")[0], args.batch_size)
    with FlopCounterMode(display=False) as counter:
        iteration(0)
    return counter.get_total_flops()


def timed_rate(iteration, args: argparse.Namespace, device: str = "cpu") -> float:
    """Iterations per second of ``iteration(step)`` over ``args.steps`` after ``args.warmup``, or over as many as
    fit in ``args.seconds`` (when given)."""
    budget = getattr(args, "seconds", None) or math.inf
    for step in range(args.warmup):
        iteration(step)
    wait_for(device)
    timed, start = 0, time.perf_counter()
    while timed < args.steps and (timed == 0 or time.perf_counter() - start < budget):
        iteration(args.warmup + timed)
        timed += 1
    wait_for(device)
    return timed / (time.perf_counter() - start)


def plain_pytorch(datamodule: MNISTDataModule, args: argparse.Namespace, device: str = "cpu") -> float:
    return timed_rate(plain_loop(gan(args), datamodule.split_tensors("train")[0], args.batch_size, device), args, device)


def genlab(datamodule: MNISTDataModule, args: argparse.Namespace, **options: str) -> float:
    """Iterations (D and G updates) per second of :func:`genlab_timer`'s run (``options``: its precision,
    accelerator, compile, population seeds; a population's iteration counts once for all its members); with
    ``minibatches_per_step`` s, timed over ``steps // s`` (at least one) training steps of s iterations after
    ``warmup // s``, or fewer if ``args.seconds`` (when given) run out first."""
    timer = genlab_timer(datamodule, args, **options)
    return timer.timed * datamodule.hparams.minibatches_per_step / timer.seconds


def genlab_timer(
    datamodule: MNISTDataModule,
    args: argparse.Namespace,
    precision: str = "32-true",
    accelerator: str = "cpu",
    compile: str = "none",
    seeds: list[int] | None = None,
) -> IterationTimer:
    """The :class:`IterationTimer` of one genlab run: its timed steps, their seconds and its first batch's time."""
    group = datamodule.hparams.minibatches_per_step
    timer = IterationTimer(args.warmup // group, max(1, args.steps // group), getattr(args, "seconds", None) or math.inf)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=-1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(gan(args, compile, seeds), datamodule)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of variant (c)")
    parser.add_argument(
        "--widths", type=float, nargs="+", default=[1.0, 0.25], help="scales of all hidden widths (1.0 = the default GAN)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument(
        "--compile", default=None, help="also (f): genlab with model.compile set to this mode (default, reduce-overhead, ...)"
    )
    args = parser.parse_args()
    skip_cuda_probe_without_gpu()  # as train.py does
    flush_denormals_to_zero()
    L.seed_everything(0, verbose=False)

    def mnist(**kwargs) -> MNISTDataModule:
        datamodule = MNISTDataModule(data_dir=args.data_dir, batch_size=args.batch_size, val_size=0, **kwargs)
        datamodule.setup("fit")
        return datamodule

    print(
        f"MLP GAN on MNIST, batch {args.batch_size}, {args.steps} timed iterations (1 D + 1 G step each), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    rate = {
        name: matmul_gflops(rows, dtype)
        for name, rows, dtype in (
            ("fp32", args.batch_size, torch.float32),
            ("bf16", args.batch_size, torch.bfloat16),
            ("bf16 x256", 256, torch.bfloat16),
        )
    }
    print(
        f"machine: matmul {args.batch_size}x1024 @ 1024x1024: fp32 {rate['fp32']:.0f} GFLOP/s, bf16 {rate['bf16']:.0f} GFLOP/s "
        f"(bf16 at 256 rows: {rate['bf16 x256']:.0f} GFLOP/s)"
    )
    variants = {
        "(a) plain PyTorch, data in memory": lambda: plain_pytorch(mnist(), args),
        "(b) genlab, in-memory datamodule": lambda: genlab(mnist(), args),
        f"(c) genlab, torchvision per-item DataLoader ({args.workers} workers)": lambda: genlab(
            mnist(in_memory=False, num_workers=args.workers), args
        ),
        "(d) genlab, in-memory, bf16-mixed": lambda: genlab(mnist(), args, precision="bf16-mixed"),
        "(e) genlab, in-memory, data.minibatches_per_step 10": lambda: genlab(mnist(minibatches_per_step=10), args),
    }
    compile_seconds: list[float] = []
    if args.compile:

        def compiled() -> float:
            timer = genlab_timer(mnist(), args, compile=args.compile)
            compile_seconds.append(timer.first_batch_seconds)
            return timer.timed / timer.seconds

        variants[f"(f) genlab, model.compile {args.compile}"] = compiled
    for width in args.widths:
        args.width = width
        gflop = flops_per_iteration(mnist(), args) / 1e9
        # Rounds interleave the variants so that a slow spell of a shared machine hits all of them.
        rounds = [{name: run() for name, run in variants.items()} for _ in range(args.repeats)]
        results = {name: statistics.median(r[name] for r in rounds) for name in variants}
        a, b, c, d, e = list(results.values())[:5]
        print(f"\nhidden widths x{width}: {gflop:.3f} GFLOP per iteration (median of {args.repeats} interleaved rounds):")
        for name, steps_per_second in results.items():
            achieved = steps_per_second * gflop
            print(
                f"  {name:<62} {steps_per_second:8.2f} it/s {achieved:7.1f} GFLOP/s "
                f"= {achieved / rate['fp32']:.2f} of fp32 matmul"
            )
        ratios = {
            "(b)/(a)": b / a,
            "(e)/(a)": e / a,
            "(b) of fp32 matmul": b * gflop / rate["fp32"],
            "(d)/(b) bf16 over fp32": d / b,
            "(b)/(c)": b / c,
        }
        for name, value in ratios.items():
            print(f"  {name:<24} = {value:.3f}   (target >= {TARGETS[name]})")
        if compile_seconds:
            f = list(results.values())[5]
            print(
                f"  (f)/(b) compiled over eager = {f / b:.3f}; the first batch (compiling) took "
                f"{compile_seconds[0]:.1f} s in the first round (later rounds reuse the compiled code)"
            )
            compile_seconds.clear()


if __name__ == "__main__":
    main()
