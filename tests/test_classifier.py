"""The LeNet domain classifiers: network shapes, the export file, and the stored weights on the real test sets."""

from functools import partial
from pathlib import Path

import pytest
import torch

from callbacks import ExportClassifier
from cli import export
from core.errors import ConfigError
from datamodules import FashionMNISTDataModule, MNISTDataModule
from lightning_modules import Classifier
from lightning_modules.classifier import load_classifier
from lightning_modules.components.lenet import LeNet
from tests.conftest import ROOT

PRETRAINED = ROOT / "pretrained"


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_lenet_gives_logits_and_penultimate_features_for_mnist_and_cifar_sizes(shape):
    network = LeNet(shape, num_classes=10, hidden=(84,))
    images = torch.randn(5, *shape)
    assert network(images).shape == (5, 10) and network.features(images).shape == (5, 84)
    assert (network.features(images) >= 0).all()  # after the ReLU


SMALL_CLASSIFIER = partial(Classifier, network=partial(LeNet, channels=(4, 8), hidden=(16,)))


def classifier_data(data_root, normalization="mean_std") -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=32, val_size=64, normalization=normalization)


def test_export_rebuilds_the_trained_network_with_its_input_statistics(synthetic_mnist, fit_tiny, tmp_path):
    export, datamodule = tmp_path / "pretrained" / "lenet.pt", classifier_data(synthetic_mnist)
    trainer, model = fit_tiny(SMALL_CLASSIFIER, datamodule, callbacks=[ExportClassifier(str(export))])
    network, meta = load_classifier(export)
    assert meta["mean"] == [0.1307] and meta["std"] == [0.3081] and meta["class_names"][7] == "7"
    assert not any(p.requires_grad for p in network.parameters()) and not network.training
    images = torch.randn(8, 1, 28, 28)
    model.eval()
    torch.testing.assert_close(network(images), model(images), rtol=0, atol=0)
    (result,) = trainer.test(model, datamodule, verbose=False)  # the in-memory loader serves evaluation too
    assert 0.0 <= result["test/acc"] <= 1.0


def test_export_refuses_inputs_without_mean_std_statistics(synthetic_mnist, fit_tiny, tmp_path):
    exporter = ExportClassifier(str(tmp_path / "pretrained" / "lenet.pt"))
    with pytest.raises(ConfigError, match="data.normalization='mean_std'"):
        fit_tiny(SMALL_CLASSIFIER, classifier_data(synthetic_mnist, normalization="symmetric"), callbacks=[exporter])


def test_export_goes_into_the_run_folder_and_promotion_demands_a_complete_accurate_run(
    synthetic_mnist, fit_tiny, tmp_path, monkeypatch
):
    stored = tmp_path / "pretrained"
    stored.mkdir()
    monkeypatch.setattr(export, "PRETRAINED_DIR", stored)
    fit_tiny(SMALL_CLASSIFIER, classifier_data(synthetic_mnist), limit_train_batches=2, callbacks=[ExportClassifier()])
    exported = tmp_path / "lenet_mnist.pt"  # no logger: the run folder is default_root_dir
    assert exported.is_file() and load_classifier(exported)[1]["completed"]
    with pytest.raises(ConfigError, match=r"test accuracy \d+\.\d+% is below the target 99.0%"):  # random labels: ~10 %
        export.promote(exported, str(synthetic_mnist))
    assert not list(stored.iterdir())
    partial = torch.load(exported, weights_only=True) | {"completed": False}
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="did not complete its configured epochs"):
        export.promote(tmp_path / "partial.pt", str(synthetic_mnist))
    monkeypatch.setitem(export.TARGET_ACCURACY, "mnist", 0.0)
    assert "replaced: test accuracy none ->" in export.promote(exported, str(synthetic_mnist))
    assert (stored / "lenet_mnist.pt").read_bytes() == exported.read_bytes()


def test_a_fast_dev_run_does_not_replace_exported_weights(synthetic_mnist, fit_tiny, tmp_path):
    export = tmp_path / "pretrained" / "lenet.pt"
    fit_tiny(SMALL_CLASSIFIER, classifier_data(synthetic_mnist), fast_dev_run=2, callbacks=[ExportClassifier(str(export))])
    assert not export.exists()


@torch.no_grad()
def accuracy_on_test_set(file: Path, datamodule) -> float:
    network, meta = load_classifier(file)
    datamodule.setup("test")
    images, labels = datamodule.split_tensors("test")
    assert meta["mean"] == list(datamodule.mean) and len(labels) == 10_000
    predictions = torch.cat([network(datamodule.normalize(chunk)).argmax(1) for chunk in images.split(1000)])
    return (predictions == labels).float().mean().item()


def test_stored_mnist_classifier_reaches_99_percent_on_the_real_test_set(real_mnist):
    assert (
        accuracy_on_test_set(PRETRAINED / "lenet_mnist.pt", MNISTDataModule(data_dir=str(real_mnist), normalization="mean_std"))
        >= 0.990
    )


def test_stored_fashion_mnist_classifier_reaches_90_percent_on_the_real_test_set(real_fashion_mnist):
    file = PRETRAINED / "lenet_fashion_mnist.pt"
    assert accuracy_on_test_set(file, FashionMNISTDataModule(data_dir=str(real_fashion_mnist), normalization="mean_std")) >= 0.900
