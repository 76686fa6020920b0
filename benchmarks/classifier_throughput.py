"""CIFAR-10 LeNet training throughput: genlab against the homework's own loop, side by side in one run.

  (a) plain PyTorch: the PyTorch tutorial's loop (zero_grad, forward, cross-entropy, backward, SGD
      step with momentum) over batches sliced from the uint8 training tensor in memory, each
      normalised to [-1, 1] as it is used; the same network and optimizer settings as genlab;
  (b) genlab: Lightning Trainer + ``Classifier`` + ``CIFAR10DataModule`` (in memory), one minibatch
      per training step;
  (c) genlab with ``data.minibatches_per_step = --group``: the same updates, Lightning's per-step
      work paid once per group.

At batch size 4 an epoch is 12,500 optimizer steps of a 62,006-parameter network: per-step
framework work decides the wall time. Printed per batch size: minibatches per second of each variant
(median of ``--repeats`` interleaved rounds) and (b)/(a), (c)/(a) against the targets of
docs/cifar10_lenet.md. Start-up (imports, decoding the JPEGs, the first ``--warmup`` minibatches)
is excluded. Usage::

    python benchmarks/classifier_throughput.py [--batch-sizes 4 16] [--minibatches 3000] [--group 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch
import torch.nn.functional as F

from cli.process_setup import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from datamodules import CIFAR10DataModule
from lightning_modules import Classifier
from lightning_modules.components.lenet import LeNet

#: Targets of docs/cifar10_lenet.md: genlab's minibatches/s over the plain loop's, per batch size.
TARGETS = {4: 0.8, 16: 0.9}
TUTORIAL_NETWORK = partial(LeNet, channels=(6, 16), paddings=(0, 0), hidden=(120, 84), dropout=0.0)
TUTORIAL_SGD = partial(torch.optim.SGD, lr=1e-3, momentum=0.9, fused=True)


class MinibatchTimer(L.Callback):
    """Wall time of optimizer steps ``warmup`` to ``warmup + minibatches`` (counted by ``global_step``,
    which manual optimization advances once per minibatch), then stop."""

    def __init__(self, warmup: int, minibatches: int) -> None:
        self.warmup, self.minibatches = warmup, minibatches
        self.start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None and trainer.global_step >= self.warmup:
            self.start, self.first_step = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None and trainer.global_step - self.first_step >= self.minibatches:
            self.rate = (trainer.global_step - self.first_step) / (time.perf_counter() - self.start)
            trainer.should_stop = True


def plain_pytorch(images: torch.Tensor, labels: torch.Tensor, batch_size: int, args: argparse.Namespace) -> float:
    """Minibatches per second of the tutorial's loop."""
    network = TUTORIAL_NETWORK(tuple(images.shape[1:]), 10)
    optimizer = TUTORIAL_SGD(network.parameters())
    order = torch.randperm(len(labels))
    for step in range(args.warmup + args.minibatches):
        if step == args.warmup:
            start = time.perf_counter()
        index = order[(step * batch_size) % (len(labels) - batch_size) :][:batch_size]
        inputs = images[index].float().div_(127.5).sub_(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(network(inputs), labels[index])
        loss.backward()
        optimizer.step()
    return args.minibatches / (time.perf_counter() - start)


def genlab(decoded: CIFAR10DataModule, batch_size: int, group: int, args: argparse.Namespace) -> float:
    """Minibatches per second of the genlab classifier on the same in-memory images."""
    datamodule = CIFAR10DataModule(
        data_dir=decoded.data_dir,
        batch_size=batch_size,
        normalization="symmetric",
        val_size=0,
        drop_last=False,
        minibatches_per_step=group,
    )
    datamodule._splits = decoded._splits  # decoded once for every variant (a benchmark shortcut)
    timer = MinibatchTimer(args.warmup, args.minibatches)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=100, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(Classifier((3, 32, 32), 10, network=TUTORIAL_NETWORK, optimizer=TUTORIAL_SGD), datamodule)
    return timer.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--minibatches", type=int, default=3000, help="timed minibatches per variant")
    parser.add_argument("--warmup", type=int, default=200, help="untimed minibatches first")
    parser.add_argument("--group", type=int, default=50, help="data.minibatches_per_step of variant (c)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    decoded = CIFAR10DataModule(data_dir=args.data_dir, normalization="symmetric", val_size=0)
    decoded.setup("fit")
    images, labels = decoded.split_tensors("train")
    for batch_size in args.batch_sizes:
        rates: dict[str, list[float]] = {"(a) plain": [], "(b) genlab": [], f"(c) genlab, groups of {args.group}": []}
        for _ in range(args.repeats):
            rates["(a) plain"].append(plain_pytorch(images, labels, batch_size, args))
            rates["(b) genlab"].append(genlab(decoded, batch_size, 1, args))
            rates[f"(c) genlab, groups of {args.group}"].append(genlab(decoded, batch_size, args.group, args))
        medians = {name: statistics.median(values) for name, values in rates.items()}
        plain = medians["(a) plain"]
        print(f"\nbatch size {batch_size} ({args.minibatches} minibatches timed, median of {args.repeats}):")
        for name, rate in medians.items():
            print(f"  {name:32s} {rate:8.0f} minibatches/s   {rate / plain:5.2f} x (a)")
        best = max(medians[name] for name in medians if name != "(a) plain") / plain
        print(f"  genlab/plain {best:.2f} (target >= {TARGETS.get(batch_size, float('nan')):.2f})")


if __name__ == "__main__":
    main()
