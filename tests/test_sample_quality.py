"""Classifier-based sample quality: coverage closed forms, FID/KID sanity on the real MNIST images,
the numbers of one classifier pass per image equal to those of every metric featurising itself,
and the callback in a GAN run."""

import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from benchmarks.quality_eval import PerMetricQualityMetrics, evaluate, first_statistics
from callbacks import EpochSeed, SampleQuality
from callbacks.sample_quality import ImageQualityMetrics, class_coverage, conditional_accuracy, domain_classifier
from core.errors import ConfigError
from datamodules import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from lightning_modules import GAN
from tests.conftest import ROOT, TINY_GAN

MNIST_CLASSIFIER = ROOT / "pretrained" / "lenet_mnist.pt"
MNIST_ENCODER = ROOT / "pretrained" / "vae_encoder_mnist.pt"


def test_one_class_covers_a_tenth_with_maximal_kl_and_a_balanced_one_all_with_zero():
    collapsed = class_coverage(torch.full((500,), 3), 10)
    assert collapsed["classes_covered"] == 1 and collapsed["class_kl"].item() == pytest.approx(math.log(10))
    balanced = class_coverage(torch.arange(1000) % 10, 10)
    assert balanced["classes_covered"] == 10 and balanced["class_kl"].item() == pytest.approx(0.0, abs=1e-12)


def blur(images, strength):
    kernel = torch.ones(1, 1, 2 * strength + 1, 2 * strength + 1) / (2 * strength + 1) ** 2
    return F.conv2d(images, kernel, padding=strength)


@pytest.fixture(scope="module")
def mnist_images():
    dm = MNISTDataModule(data_dir=str(ROOT / "data"), val_size=0)
    dm.setup("fit")
    train, test = dm.split_tensors("train")[0][:4000], dm.split_tensors("test")[0][:2000]
    return train.float() / 255, test.float() / 255


@pytest.mark.parametrize("corruption", ["noise", "blur"])
def test_fid_grows_monotonically_with_corruption_and_kid_agrees(real_mnist, mnist_images, corruption):
    train, test = mnist_images
    generator = torch.Generator().manual_seed(0)
    if corruption == "noise":
        variants = [test] + [(test + s * torch.randn(test.shape, generator=generator)).clamp(0, 1) for s in (0.1, 0.2, 0.4)]
    else:
        variants = [test] + [blur(test, k) for k in (1, 2, 3)]
    metrics = ImageQualityMetrics(MNIST_CLASSIFIER, kid_subset_size=500)
    metrics.add_real(train)
    fids, kids = [], []
    reference = metrics.fidelity_spaces(train[: len(test)])
    for images in variants:
        metrics.add_generated(images)
        result = metrics.compute(reference)
        fids.append(result["fid"].item())
        kids.append(result["kid"].item())
    assert fids[0] < 0.5 * fids[1], f"FID(test vs train) should be small next to the mildest corruption: {fids}"
    assert fids == sorted(fids) and kids == sorted(kids), f"FID {fids}, KID {kids}"


class ImageCounter:
    """The images through a module's ``forward``, counted by a wrapper of it (an instance attribute,
    which ``nn.Module.__call__`` finds before the method)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.images, forward = 0, module.forward

        def counted(images, *args, **kwargs):
            self.images += len(images)
            return forward(images, *args, **kwargs)

        module.forward = counted


def test_one_classifier_pass_per_image_gives_the_numbers_of_every_metric_featurising_itself(real_mnist, mnist_images):
    """Both paths on the same images, as SampleQuality runs them (batches of 250, the last one short):
    a first evaluation (real statistics, reference rows, noisy samples) and a later one on the cached
    statistics (blurred samples), KID and IS drawing the same subsets; the new path runs the network
    once per image and keeps the reference's k-NN radii from the first evaluation, where the old one
    (the reference, benchmarks/quality_eval.py) ran it 5 times per sample and twice per real image."""
    train, test = mnist_images
    generator = torch.Generator().manual_seed(0)
    real, reference = train[:600], test[:600]
    samples = [(test[600:1200] + 0.3 * torch.randn(600, 1, 28, 28, generator=generator)).clamp(0, 1), blur(test[1200:1800], 1)]
    old = PerMetricQualityMetrics(MNIST_CLASSIFIER, kid_subset_size=300, encoder=MNIST_ENCODER)
    new = ImageQualityMetrics(MNIST_CLASSIFIER, kid_subset_size=300, encoder=MNIST_ENCODER)
    forwards, convolutions = ImageCounter(new.features.network), ImageCounter(new.features.network.conv)
    old_convolutions = ImageCounter(old.features.network.conv)
    old_cached, new_cached = (first_statistics(metrics, real, reference, 250) for metrics in (old, new))
    old_rows, new_rows = old_cached["reference"], new_cached["reference"]
    assert new_rows.keys() == old_rows.keys() == {"features", "codes"}
    assert all(torch.equal(new_rows[space], old_rows[space]) for space in old_rows)
    assert old_cached.keys() == {"reference"} and new_cached["radii"].keys() == {"", "joint_"}  # kept: new path only
    for images in samples:
        expected, measured = evaluate(old, images, old_cached, 250), evaluate(new, images, new_cached, 250)
        assert measured.keys() == expected.keys() and {"fid", "kid", "inception_score", "joint_precision"} <= expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(measured[name].double(), value.double(), rtol=1e-6, atol=0, equal_nan=True, msg=name)
        assert expected["fid"] > 1 and 0 < expected["precision"] < 1  # numbers that could differ, not zeros
    assert forwards.images == convolutions.images == 4 * 600  # real, reference, two sample sets: once each
    assert old_convolutions.images == (2 + 1 + 2 * 5) * 600


def test_callback_logs_quality_and_writes_final_metrics_in_a_gan_run(real_mnist, make_trainer, tmp_path, monkeypatch):
    L.seed_everything(0, verbose=False)
    given_radii, compute = [], ImageQualityMetrics.compute

    def recording(self, reference, gather, radii=None):
        given_radii.append(radii)
        return compute(self, reference, gather, radii)

    monkeypatch.setattr(ImageQualityMetrics, "compute", recording)
    quality = SampleQuality(
        str(MNIST_CLASSIFIER), every_n_epochs=1, num_samples=300, num_real=600, kid_subset_size=100, batch_size=150
    )
    trainer = make_trainer(
        max_epochs=2, limit_train_batches=5, logger=CSVLogger(tmp_path, name="run", version=0), callbacks=[EpochSeed(), quality]
    )
    trainer.fit(GAN(**TINY_GAN), MNISTDataModule(data_dir=str(real_mnist), val_size=0))
    assert len(given_radii) == 2 and all(radii is quality.reference_radii for radii in given_radii)  # one per epoch
    assert {prefix: [len(radii) for radii in ks.values()] for prefix, ks in quality.reference_radii.items()} == {
        "": [300, 300],
        "joint_": [300, 300],
    }  # the first evaluation's, for k = 3 and 5 (num_samples test images)
    run = tmp_path / "run" / "version_0"
    final = json.loads((run / "final_metrics.json").read_text())
    assert {"fid", "kid", "inception_score", "classes_covered", "class_kl"} <= final.keys() and len(
        final["class_histogram"]
    ) == 10
    assert all(0 <= final[name] <= 1 for name in ("precision", "recall", "coverage", "ambiguous_share")) and final["density"] >= 0
    assert all(0 <= final[f"joint_{name}"] <= 1 for name in ("precision", "recall", "coverage"))  # MNIST has a stored VAE encoder
    assert len(final["confident_class_histogram"]) == 10 and final["confident_classes_covered"] <= final["classes_covered"]
    assert final["fid"] > 0 and 1 <= final["inception_score"] <= 10 and sum(final["class_histogram"]) == pytest.approx(1)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {
        "quality/fid",
        "quality/kid",
        "quality/classes_covered",
        "quality/precision",
        "quality/recall",
        "quality/joint_precision",
        "quality/ambiguous_share",
    } <= set(header)


def test_conditional_accuracy_counts_samples_classified_as_requested():
    requested = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    result = conditional_accuracy(predicted, requested, num_classes=4)
    assert result["conditional_accuracy"].item() == pytest.approx(6 / 8)
    assert result["conditional_accuracy_per_class"].tolist() == pytest.approx([3 / 4, 1 / 2, 1.0, 0.0])  # class 3: never asked


def test_default_classifier_is_the_datasets_and_a_dataset_without_one_is_a_clear_error(tmp_path):
    assert domain_classifier(MNISTDataModule()) == MNIST_CLASSIFIER
    assert domain_classifier(FashionMNISTDataModule()).name == "lenet_fashion_mnist.pt"
    with pytest.raises(ConfigError, match="no domain classifier for cifar10"):
        domain_classifier(CIFAR10DataModule())


def test_fast_dev_run_loads_the_classifier_but_measures_nothing(real_mnist, make_trainer, tmp_path):
    def run(classifier):
        trainer = make_trainer(fast_dev_run=2, callbacks=[SampleQuality(classifier)])
        trainer.fit(GAN(**TINY_GAN), MNISTDataModule(data_dir=str(real_mnist), val_size=0))

    run(None)
    assert not list(tmp_path.rglob("final_metrics.json"))
    with pytest.raises(ConfigError, match="missing.pt not found"):
        run(str(tmp_path / "missing.pt"))
