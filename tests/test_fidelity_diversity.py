"""Precision, recall, density and coverage (docs/gan_mnist.md): equal to the authors' reference
implementation, and the orderings that hold on real MNIST in the domain classifier's features;
confident class coverage on hand-made logits."""

import contextlib
import io

import numpy as np
import prdc
import pytest
import torch

from callbacks.sample_quality import ClassifierFeatures, confident_class_coverage
from datamodules import MNISTDataModule
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import precision_recall_density_coverage
from tests.conftest import ROOT, require_real


@pytest.mark.parametrize("k", [3, 5])
def test_the_four_metrics_equal_the_prdc_reference_implementation(k):
    g = torch.Generator().manual_seed(k)
    real = torch.randn(700, 16, generator=g, dtype=torch.float64)
    fake = torch.randn(500, 16, generator=g, dtype=torch.float64) * 1.3 + 0.4
    ours = precision_recall_density_coverage(real, fake, k, k, chunk=128)  # several chunks
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        reference = prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name].item() == pytest.approx(float(reference[name]), abs=1e-6), name
    assert 0.1 < ours["precision"] < 0.9 and 0.1 < ours["coverage"] < 0.9  # neither metric trivially 0 or 1 here


@pytest.fixture(scope="module")
def features():
    """Domain-classifier features of real MNIST: reference (2,000 test images) and comparison sets."""
    datamodule = MNISTDataModule(data_dir=str(require_real("MNIST/raw/train-images-idx3-ubyte")), val_size=0)
    datamodule.setup("fit")
    network, meta = load_classifier(ROOT / "lightning_modules" / "pretrained" / "lenet_mnist.pt")
    featurize = ClassifierFeatures(network, meta["mean"], meta["std"])
    train_images, train_labels = datamodule.split_tensors("train")
    test_images = datamodule.split_tensors("test")[0][:2000].float() / 255
    train = train_images[:6000].float() / 255

    def of(images):
        with torch.no_grad():
            return torch.cat([featurize(chunk) for chunk in images.split(1000)])

    low_digits = train_images[train_labels < 5][:2000].float() / 255
    ones = train_images[train_labels == 1][:2000].float() / 255
    g = torch.Generator().manual_seed(0)
    noisy = {sigma: of((train[:2000] + sigma * torch.randn(train[:2000].shape, generator=g)).clamp(0, 1)) for sigma in (0.1, 0.3, 0.6)}
    return {"reference": of(test_images), "real": of(train[:2000]), "digits_0_4": of(low_digits), "only_ones": of(ones), "noisy": noisy}


def test_dropped_classes_and_collapse_lower_recall_and_coverage_not_precision(features):
    def measure(name):
        return precision_recall_density_coverage(features["reference"], features[name])

    real, half, ones = measure("real"), measure("digits_0_4"), measure("only_ones")
    for dropped in (half, ones):
        assert dropped["recall"] < real["recall"] - 0.25 and dropped["coverage"] < real["coverage"] - 0.25
        assert abs(dropped["precision"] - real["precision"]) < 0.1  # every sample is still a real digit
    assert ones["recall"] < half["recall"] and ones["coverage"] < half["coverage"]  # 1 class of 10 < 5 of 10


def test_noise_lowers_recall_and_coverage_monotonically(features):
    real = precision_recall_density_coverage(features["reference"], features["real"])
    measured = [real] + [precision_recall_density_coverage(features["reference"], features["noisy"][sigma]) for sigma in (0.1, 0.3, 0.6)]
    for name in ("recall", "coverage"):
        values = [m[name].item() for m in measured]
        assert values == sorted(values, reverse=True) and values[-1] < 0.5 * values[0], (name, values)


def test_confident_class_coverage_counts_only_samples_above_the_threshold():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0.1, 0, 0], [0, 0.2, 0.1], [4.0, 0, 0]])  # rows 3 and 4 are ambiguous
    result = confident_class_coverage(logits, num_classes=3, threshold=0.9)
    assert result["ambiguous_share"].item() == pytest.approx(2 / 5)
    assert result["confident_class_histogram"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert result["confident_classes_covered"].item() == 2
    assert result["confident_class_kl"].item() == pytest.approx(2 / 3 * np.log(2) + 1 / 3 * np.log(1.0))
    nothing_sure = confident_class_coverage(torch.zeros(4, 3), num_classes=3, threshold=0.9)
    assert nothing_sure["ambiguous_share"].item() == 1.0 and nothing_sure["confident_classes_covered"].item() == 0
