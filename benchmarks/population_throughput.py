"""The optimizer study trained as one population against its runs one after another, side by side in one run.

  (a) plain PyTorch, sequential: each run alone in a minimal loop (zero_grad, forward,
      cross-entropy, backward, step of the hand-written optimizer) over minibatches indexed out of
      the normalised training tensor: the honest floor of "one run at a time";
  (b) genlab, sequential: each run alone as ``configs/mnist_mlp.yaml`` trains it (Lightning Trainer,
      ``Classifier``, ``MNISTDataModule`` in memory);
  (c) genlab, population: ``configs/optimizer_study.yaml``'s ``OptimizerStudy``, every run at once.

The study's runs are its 5 optimizers × 3 rates × 3 seeds at batch 128; a run's cost depends on its
optimizer only, so (a) and (b) time one run per optimizer and count each 9 times. Printed: run-steps
per second of each variant (median of ``--repeats`` interleaved rounds, start-up and ``--warmup``
steps excluded), (c)/(a) and (c)/(b) against the target (>= 5x), and the training time of the whole
study (45 runs x 15 epochs x 469 steps) each implies, against the target (<= 10 minutes; the
study's own wall time, with its per-epoch test measurements, is in docs/optimizers.md). Usage::

    python benchmarks/population_throughput.py [--steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
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
from datamodules import MNISTDataModule
from lightning_modules import Classifier, OptimizerStudy
from lightning_modules.components.mlp import MLPClassifier
from lightning_modules.components.optimizers import SGD, Adam, AMSGrad, HeavyBall, RMSProp

OPTIMIZERS = {
    "SGD": SGD,
    "HeavyBall": partial(HeavyBall, momentum=0.9),
    "RMSProp": partial(RMSProp, decay=0.99),
    "AMSGrad": AMSGrad,
    "Adam": Adam,
}
RATES, SEEDS, EPOCHS, BATCH = (0.5, 1e-2, 1e-5), (0, 1, 2), 15, 128
RUNS_PER_OPTIMIZER = len(RATES) * len(SEEDS)
TARGET_SPEEDUP, TARGET_MINUTES = 5.0, 10.0


class StepTimer(L.Callback):
    """Wall time of training batches ``warmup`` to ``warmup + steps``, then stop."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.batches = warmup, steps, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches == self.warmup:
            self.start = time.perf_counter()
        elif self.batches == self.warmup + self.steps:
            self.seconds_per_step = (time.perf_counter() - self.start) / self.steps
            trainer.should_stop = True


def plain_sequential(images: torch.Tensor, labels: torch.Tensor, make_optimizer, args: argparse.Namespace) -> float:
    """Seconds per step of one run in a minimal loop."""
    torch.manual_seed(0)
    network = MLPClassifier((1, 28, 28), 10)
    optimizer = make_optimizer(network.parameters(), lr=1e-2)
    order = torch.randperm(len(labels))
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        index = order[(step * BATCH) % (len(labels) - BATCH) :][:BATCH]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(network(images[index]), labels[index]).backward()
        optimizer.step()
    return (time.perf_counter() - start) / args.steps


def genlab(
    model: L.LightningModule, loaded: MNISTDataModule, args: argparse.Namespace, population_seeds: list[int] | None = None
) -> float:
    """Seconds per training step of ``model`` under the Lightning Trainer, on the loaded MNIST (with
    ``population_seeds``, batches stacked by seed, as ``train.py`` links them from the model's seeds)."""
    datamodule = MNISTDataModule(
        data_dir=loaded.data_dir,
        batch_size=BATCH,
        normalization="mean_std",
        val_size=0,
        drop_last=False,
        population_seeds=population_seeds,
    )
    datamodule._splits = loaded._splits  # read once for every variant (a benchmark shortcut)
    timer = StepTimer(args.warmup, args.steps)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=100, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, datamodule)
    return timer.seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed training steps per variant and optimizer")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    loaded = MNISTDataModule(data_dir=args.data_dir, batch_size=BATCH, normalization="mean_std", val_size=0, drop_last=False)
    loaded.setup("fit")
    images, labels = loaded.split_tensors("train")
    images = loaded.normalize(images)
    steps_per_run = EPOCHS * math.ceil(len(labels) / BATCH)

    # seconds per run-step: a sequential study takes RUNS_PER_OPTIMIZER runs of each optimizer
    rounds: dict[str, list[float]] = {"(a) plain, sequential": [], "(b) genlab, sequential": [], "(c) genlab, population": []}
    for _ in range(args.repeats):
        plain = [plain_sequential(images, labels, make, args) for make in OPTIMIZERS.values()]
        rounds["(a) plain, sequential"].append(statistics.mean(plain))
        sequential = []
        for make in OPTIMIZERS.values():
            torch.manual_seed(0)
            sequential.append(genlab(Classifier(network=MLPClassifier, optimizer=partial(make, lr=1e-2)), loaded, args))
        rounds["(b) genlab, sequential"].append(statistics.mean(sequential))
        study = OptimizerStudy(list(OPTIMIZERS.values()), learning_rates=RATES, seeds=SEEDS)
        rounds["(c) genlab, population"].append(genlab(study, loaded, args, population_seeds=list(SEEDS)) / len(study.runs))

    seconds = {name: statistics.median(values) for name, values in rounds.items()}
    runs = len(OPTIMIZERS) * RUNS_PER_OPTIMIZER
    print(
        f"\n{runs} runs ({len(OPTIMIZERS)} optimizers x {len(RATES)} rates x {len(SEEDS)} seeds), batch {BATCH}; "
        f"{args.steps} steps timed, median of {args.repeats}:"
    )
    for name, per_run_step in seconds.items():
        study_minutes = per_run_step * steps_per_run * runs / 60
        print(f"  {name:26s} {1 / per_run_step:8.0f} run-steps/s   whole study {study_minutes:6.1f} min")
    population = seconds["(c) genlab, population"]
    for name in ("(a) plain, sequential", "(b) genlab, sequential"):
        print(f"  population / {name[4:]:20s} {seconds[name] / population:5.2f} x (target >= {TARGET_SPEEDUP:.0f})")
    print(
        f"  whole study as a population: {population * steps_per_run * runs / 60:.1f} min of training "
        f"(target <= {TARGET_MINUTES:.0f})"
    )


if __name__ == "__main__":
    main()
