"""One sample-quality evaluation, before and after #32, side by side in one process on the same images.

  old: :class:`PerMetricQualityMetrics`, the evaluation as ``callbacks/sample_quality.py`` ran it
       before (commit d4c6d8d; one process, so without the gathering across ranks), the reference
       of tests/test_sample_quality.py: torchmetrics' FID and KID each run the domain classifier
       through their ``feature=`` module, IS runs it for logits, and the class coverage and
       precision/recall paths run it again (five passes per generated image, two per real one);
  new: ``callbacks.sample_quality.ImageQualityMetrics``, one pass per image feeding every metric,
       and the reference's k-NN radii computed at the first evaluation and kept, as ``SampleQuality`` does.

An evaluation is that of ``SampleQuality`` on MNIST with the stored classifier and VAE encoder: the
first one featurises ``--samples`` real training images (FID and KID's cached statistics), as many
test images (the reference of precision, recall, density and coverage) and as many generated ones
(other training images under noise), and computes every metric; a later one, on the cached
statistics, featurises and measures another generated set (blurred training images). Loading the
classifier is not timed. The two paths' metrics are checked equal (KID and IS draw their subsets
from the same seed). Printed: seconds per evaluation of each path (median of ``--repeats``
interleaved rounds) and new/old. Usage::

    python benchmarks/quality_eval.py [--samples 10000] [--repeats 3] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from benchmarks.fid_sanity import corrupt
from callbacks.sample_quality import (
    ImageQualityMetrics,
    class_coverage,
    confident_class_coverage,
    domain_classifier,
    stored_encoder,
)
from cli.process_setup import flush_denormals_to_zero, skip_cuda_probe_without_gpu
from datamodules import MNISTDataModule
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import precision_recall_density_coverage, side_by_side
from lightning_modules.vae import load_encoder

#: new/old seconds per evaluation that #32 asks for.
TARGET = 1 / 3


class PerMetricFeatures(nn.Module):
    """The classifier as torchmetrics' feature extractor, as before #32: features, or with ``logits`` logits."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float], logits: bool = False) -> None:
        super().__init__()
        self.network, self.logits = network, logits
        self.num_features = network.head[-1].out_features if logits else network.feature_dim
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        inputs = (images.float() - self.mean) / self.std
        return self.network(inputs) if self.logits else self.network.features(inputs)


class PerMetricQualityMetrics(nn.Module):
    """``ImageQualityMetrics`` before #32, every metric featurising the images itself (less the
    gathering of rows across ranks: one process here)."""

    def __init__(
        self,
        classifier: str | Path,
        kid_subset_size: int = 1000,
        k_precision_recall: int = 3,
        k_density_coverage: int = 5,
        confidence: float = 0.9,
        encoder: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.encoder = load_encoder(encoder)[0] if encoder else None
        network, meta = load_classifier(classifier)
        self.num_classes = len(meta["class_names"])
        self.k_precision_recall, self.k_density_coverage, self.confidence = k_precision_recall, k_density_coverage, confidence
        self.features = features = PerMetricFeatures(network, meta["mean"], meta["std"])
        self.logits = PerMetricFeatures(network, meta["mean"], meta["std"], logits=True)
        self.fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Metric `(Kernel Inception Distance|InceptionScore)` will save all extracted features"
            )
            self.kid = KernelInceptionDistance(feature=features, subset_size=kid_subset_size, reset_real_features=False)
            self.inception_score = InceptionScore(feature=self.logits, normalize=False, splits=1)
        self.has_real = False
        self.generated_logits: list[Tensor] = []
        self.generated: dict[str, list[Tensor]] = {}

    def fidelity_spaces(self, images: Tensor) -> dict[str, Tensor]:
        spaces = {"features": self.features(images)}
        if self.encoder is not None:
            spaces["codes"] = self.encoder(images)
        return spaces

    def add_real(self, images: Tensor) -> None:
        self.fid.update(images, real=True)
        self.kid.update(images, real=True)
        self.has_real = True

    def add_generated(self, images: Tensor) -> None:
        self.fid.update(images, real=False)
        self.kid.update(images, real=False)
        self.inception_score.update(images)
        self.generated_logits.append(self.logits(images))
        for space, rows in self.fidelity_spaces(images).items():
            self.generated.setdefault(space, []).append(rows)

    def compute(self, reference: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = torch.cat(self.generated_logits)
        generated = {space: torch.cat(rows) for space, rows in self.generated.items()}
        self.generated_logits, self.generated = [], {}
        self.predicted = logits.argmax(1)
        kid_mean, kid_std = self.kid.compute()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom is <= 0")
            inception_score = self.inception_score.compute()[0]
        metrics = {"fid": self.fid.compute(), "kid": kid_mean, "kid_std": kid_std, "inception_score": inception_score}
        for metric in (self.fid, self.kid, self.inception_score):
            metric.reset()
        k = self.k_precision_recall, self.k_density_coverage
        fidelity_diversity = precision_recall_density_coverage(reference["features"], generated["features"], *k)
        if "codes" in generated:
            joint = side_by_side([reference["features"], reference["codes"]], [generated["features"], generated["codes"]])
            fidelity_diversity |= {
                f"joint_{name}": value for name, value in precision_recall_density_coverage(*joint, *k).items()
            }
        return (
            metrics
            | class_coverage(self.predicted, self.num_classes)
            | confident_class_coverage(logits, self.num_classes, self.confidence)
            | fidelity_diversity
        )


Metrics = ImageQualityMetrics | PerMetricQualityMetrics


@torch.no_grad()
def first_statistics(metrics: Metrics, real: Tensor, reference: Tensor, batch_size: int) -> dict[str, Any]:
    """What only the first evaluation of ``SampleQuality`` does, on ``[0, 1]`` images: the ``real``
    images' statistics (kept by the metrics), and what every evaluation's ``compute`` is given
    (returned): the ``reference`` images' rows and, in the new path, their k-NN radii."""
    for chunk in real.split(batch_size):
        metrics.add_real(chunk)
    spaces = [metrics.fidelity_spaces(chunk) for chunk in reference.split(batch_size)]
    rows = {name: torch.cat([space[name] for space in spaces]) for name in spaces[0]}
    if isinstance(metrics, ImageQualityMetrics):
        return {"reference": rows, "radii": metrics.reference_radii(rows)}
    return {"reference": rows}


@torch.no_grad()
def evaluate(metrics: Metrics, generated: Tensor, cached: dict[str, Any], batch_size: int) -> dict[str, Tensor]:
    """Every evaluation's work: the ``generated`` images in batches, then every metric on the
    ``cached`` returns of :func:`first_statistics`, KID's and IS's random subsets drawn from seed 0
    (so that both paths draw the same)."""
    for chunk in generated.split(batch_size):
        metrics.add_generated(chunk)
    torch.manual_seed(0)
    return metrics.compute(**cached)


def largest_relative_difference(new: dict[str, Tensor], old: dict[str, Tensor]) -> float:
    """The largest ``|new - old| / |old|`` over every entry of every metric (equal entries, NaNs
    included, count 0; a NaN against a number, infinity)."""
    worst = 0.0
    for name, value in old.items():
        a, b = new[name].double().flatten(), value.double().flatten()
        gap = ((a - b).abs() / b.abs()).nan_to_num(nan=math.inf)
        worst = max(worst, float(gap.masked_fill((a == b) | (a.isnan() & b.isnan()), 0).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10_000, help="images per set, at most 10000 (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--batch-size", type=int, default=500, help="SampleQuality.batch_size (default 500)")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    if not 1 <= args.samples <= 10_000:
        parser.error("--samples must be in [1, 10000]: the test split's size (the reference set)")
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    datamodule = MNISTDataModule(data_dir=args.data_dir, val_size=0, download=False)
    datamodule.setup("fit")
    n = args.samples
    train = datamodule.split_tensors("train")[0][: 3 * n].float() / 255
    reference = datamodule.split_tensors("test")[0][:n].float() / 255
    generator = torch.Generator().manual_seed(0)
    real = train[:n]
    first, later = corrupt(train[n : 2 * n], "noise", 0.2, generator), corrupt(train[2 * n :], "blur", 1, generator)
    classifier, encoder = domain_classifier(datamodule), stored_encoder(datamodule)
    paths = {"old: each metric featurises": PerMetricQualityMetrics, "new: one pass per image": ImageQualityMetrics}
    seconds = {(name, when): [] for name in paths for when in ("first", "later")}
    old, new = paths
    gap = 0.0
    for _ in range(args.repeats):
        results = {}
        for name, path in paths.items():
            metrics = path(classifier, min(1000, n), encoder=encoder)
            start = time.perf_counter()
            cached = first_statistics(metrics, real, reference, args.batch_size)
            results[name, "first"] = evaluate(metrics, first, cached, args.batch_size)
            middle = time.perf_counter()
            results[name, "later"] = evaluate(metrics, later, cached, args.batch_size)
            seconds[name, "first"].append(middle - start)
            seconds[name, "later"].append(time.perf_counter() - middle)
        gap = max(gap, *(largest_relative_difference(results[new, when], results[old, when]) for when in ("first", "later")))
    median = {key: statistics.median(values) for key, values in seconds.items()}
    print(f"\nMNIST, {n:,} images per set, batch size {args.batch_size}, median of {args.repeats}, seconds per evaluation:")
    print(f"  {'path':30s} {'first':>7s} {'later':>7s}")
    for name in paths:
        print(f"  {name:30s} {median[name, 'first']:7.2f} {median[name, 'later']:7.2f}")
    ratios = [median[new, when] / median[old, when] for when in ("first", "later")]
    print(f"  {'new/old':30s} {ratios[0]:7.2f} {ratios[1]:7.2f}   (target <= {TARGET:.2f})")
    print(f"largest relative difference of the two paths' metrics: {gap:.1e} ({'within' if gap <= 1e-6 else 'OVER'} 1e-6)")


if __name__ == "__main__":
    main()
