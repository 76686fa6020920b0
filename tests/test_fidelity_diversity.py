"""Precision, recall, density and coverage (docs/domain_classifiers.md): equal to the authors'
reference implementation, and the orderings that hold on real MNIST in the domain classifier's
features and beside the VAE's codes; confident class coverage on hand-made logits."""

import contextlib
import io

import numpy as np
import prdc
import pytest
import torch

from benchmarks.fid_sanity import corrupt
from callbacks.sample_quality import ClassifierFeatures, confident_class_coverage, domain_classifier, stored_encoder
from datamodules import MNISTDataModule
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import (
    nearest_neighbour_radii,
    precision_recall_density_coverage,
    reference_radii,
    side_by_side,
)
from lightning_modules.vae import load_encoder
from tests.conftest import require_real


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


@pytest.mark.parametrize("chunk", [128, 2048])
def test_radii_computed_once_are_those_of_every_call_bit_for_bit_and_so_are_the_four_metrics(chunk):
    """float32 rows as SampleQuality's features, with duplicated points (ties at distance 0 beside the
    self-distance), and two fake sets on one reference: cached radii change no number at all."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(700, 16, generator=g)
    real[600:] = real[:100]
    kept = reference_radii(real, (3, 5), chunk)
    for k in (3, 5):
        assert torch.equal(kept[k], nearest_neighbour_radii(real.double(), k, chunk))
    assert (kept[3] < kept[5]).any() and (kept[3] <= kept[5]).all()
    for scale in (1.0, 1.3):
        fake = torch.randn(500, 16, generator=g) * scale + 0.2
        expected = precision_recall_density_coverage(real, fake, 3, 5, chunk)
        measured = precision_recall_density_coverage(real, fake, 3, 5, chunk, real_radii=kept)
        assert measured.keys() == expected.keys() and all(torch.equal(measured[name], expected[name]) for name in expected)
        assert 0 < expected["precision"] < 1 and 0 < expected["coverage"] < 1


def test_radii_of_other_points_or_another_k_are_refused():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(50, 4, generator=g), torch.randn(40, 4, generator=g)
    with pytest.raises(ValueError, match=r"reference_radii\(real, \(3, 5\)\)"):
        precision_recall_density_coverage(real, fake, 3, 5, real_radii=reference_radii(real, (3, 4)))
    with pytest.raises(ValueError, match="radii of the 50 real points"):
        precision_recall_density_coverage(real, fake, 3, 5, real_radii=reference_radii(real[:45], (3, 5)))
    with pytest.raises(ValueError, match=r"every k must be in \[1, 49\]"):
        reference_radii(real, (3, 50))


SPACES = ["classifier", "classifier + VAE"]


@pytest.fixture(scope="module")
def feature_sets():
    """Real MNIST in the two feature spaces of SampleQuality: the domain classifier's features, and
    those beside the stored VAE encoder's posterior means (``joint_*``). Per space: the reference
    (2,000 test images) and the comparison sets, each as a ``(reference, set)`` pair of rows."""
    datamodule = MNISTDataModule(data_dir=str(require_real("MNIST/raw/train-images-idx3-ubyte")), val_size=0)
    datamodule.setup("fit")
    network, meta = load_classifier(domain_classifier(datamodule))
    classifier, vae = ClassifierFeatures(network, meta["mean"], meta["std"]), load_encoder(stored_encoder(datamodule))[0]
    train_images, train_labels = datamodule.split_tensors("train")
    train = train_images[:2000].float() / 255
    g = torch.Generator().manual_seed(0)
    sets = {
        "real": train,
        "digits_0_4": train_images[train_labels < 5][:2000].float() / 255,
        "only_ones": train_images[train_labels == 1][:2000].float() / 255,
    }
    sets |= {("noise", sigma): corrupt(train, "noise", sigma, g) for sigma in (0.1, 0.3, 0.6)}
    sets |= {("blur", radius): corrupt(train, "blur", radius, g) for radius in (1, 2, 3)}
    reference = datamodule.split_tensors("test")[0][:2000].float() / 255

    def rows(featurizers, images):
        with torch.no_grad():
            return [torch.cat([featurize(chunk) for chunk in images.split(1000)]) for featurize in featurizers]

    spaces = {"classifier": [classifier], "classifier + VAE": [classifier, vae]}
    return {
        space: {name: side_by_side(rows(f, reference), rows(f, images)) for name, images in sets.items()}
        for space, f in spaces.items()
    }


def measure(feature_sets, space, name):
    return precision_recall_density_coverage(*feature_sets[space][name])


@pytest.mark.parametrize("space", SPACES)
def test_dropped_classes_and_collapse_lower_recall_and_coverage_not_precision(feature_sets, space):
    real, half, ones = (measure(feature_sets, space, name) for name in ("real", "digits_0_4", "only_ones"))
    for dropped in (half, ones):
        assert dropped["recall"] < real["recall"] - 0.25 and dropped["coverage"] < real["coverage"] - 0.25
        assert abs(dropped["precision"] - real["precision"]) < 0.1  # every sample is still a real digit
    assert ones["recall"] < half["recall"] and ones["coverage"] < half["coverage"]  # 1 class of 10 < 5 of 10


@pytest.mark.parametrize("space", SPACES)
def test_noise_lowers_recall_and_coverage_monotonically(feature_sets, space):
    measured = [measure(feature_sets, space, name) for name in ("real", ("noise", 0.1), ("noise", 0.3), ("noise", 0.6))]
    for name in ("recall", "coverage"):
        values = [m[name].item() for m in measured]
        assert values == sorted(values, reverse=True) and values[-1] < 0.5 * values[0], (name, values)


@pytest.mark.parametrize("degradation", ["noise", "blur"])
def test_degradation_lowers_precision_and_density_beside_the_vae_codes_but_not_in_the_classifier_space(feature_sets, degradation):
    strengths = (0.1, 0.3, 0.6) if degradation == "noise" else (1, 2, 3)
    names = ["real"] + [(degradation, strength) for strength in strengths]
    for name in ("precision", "density"):
        joint = [measure(feature_sets, "classifier + VAE", n)[name].item() for n in names]
        real, *degraded = joint  # the mildest blur (a 3 x 3 box) leaves both near the real level (within 0.1); then they fall
        assert degraded == sorted(degraded, reverse=True) and degraded[0] < real + 0.1 and degraded[-1] < real - 0.25, (
            name,
            joint,
        )
        classifier_only = [measure(feature_sets, "classifier", n)[name].item() for n in names]
        assert classifier_only[-1] > classifier_only[0], (name, classifier_only)  # why the joint space exists


def test_confident_class_coverage_counts_only_samples_above_the_threshold():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0.1, 0, 0], [0, 0.2, 0.1], [4.0, 0, 0]])  # rows 3 and 4 are ambiguous
    result = confident_class_coverage(logits, num_classes=3, threshold=0.9)
    assert result["ambiguous_share"].item() == pytest.approx(2 / 5)
    assert result["confident_class_histogram"].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert result["confident_classes_covered"].item() == 2
    assert result["confident_class_kl"].item() == pytest.approx(2 / 3 * np.log(2) + 1 / 3 * np.log(1.0))
    nothing_sure = confident_class_coverage(torch.zeros(4, 3), num_classes=3, threshold=0.9)
    assert nothing_sure["ambiguous_share"].item() == 1.0 and nothing_sure["confident_classes_covered"].item() == 0
