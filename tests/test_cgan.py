"""The conditional GAN: conditioning of both networks, class-ordered grid inputs, and a short run
with the labelled grid and the conditional-accuracy metric."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from callbacks import EpochSeed, SampleGrid, SampleQuality
from datamodules import MNISTDataModule
from lightning_modules import CGAN
from lightning_modules.components.mlp import ProjectionMLPDiscriminator
from tests.conftest import ROOT, TINY_CGAN
from train import main


def test_projection_discriminator_is_linear_head_plus_class_embedding_dot_features():
    torch.manual_seed(0)
    discriminator = ProjectionMLPDiscriminator(num_classes=3, sample_shape=(1, 4, 4), hidden_dims=(8,), dropout=0.0)
    images, labels = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    features = discriminator.features(images)
    by_hand = (
        features @ discriminator.head.weight[0]
        + discriminator.head.bias
        + (discriminator.class_embedding.weight[labels] * features).sum(1)
    )
    torch.testing.assert_close(discriminator(images, labels), by_hand)
    # Same images, other labels: only the class term changes.
    other = (labels + 1) % 3
    delta = discriminator(images, other) - discriminator(images, labels)
    expected = ((discriminator.class_embedding.weight[other] - discriminator.class_embedding.weight[labels]) * features).sum(1)
    torch.testing.assert_close(delta, expected)


def test_generator_output_depends_on_the_label_for_the_same_noise():
    model = CGAN(**TINY_CGAN)
    z = model.sample_latent(1).repeat(10, 1)
    images = model.generate(z, torch.arange(10))
    assert images.shape == (10, 1, 28, 28)
    assert all(not torch.equal(images[0], images[k]) for k in range(1, 10))


def test_fixed_inputs_are_class_ordered_and_balanced():
    model = CGAN(**TINY_CGAN)
    z, labels = model.fixed_inputs(100, torch.Generator().manual_seed(0))
    assert z.shape == (100, 8)
    assert labels.tolist() == [k for k in range(10) for _ in range(10)]
    _, labels = model.fixed_inputs(10_000, torch.Generator().manual_seed(0))
    assert torch.bincount(labels).tolist() == [1000] * 10


def test_row_names_only_when_every_row_asks_for_one_class():
    grid = SampleGrid(num_samples=20, nrow=2)
    names = [f"class {k}" for k in range(10)]
    assert grid.row_class_names(torch.arange(20) // 2, names) == names
    assert grid.row_class_names(torch.arange(20) % 10, names) is None  # rows mix classes
    assert grid.row_class_names(None, names) is None


def test_run_writes_labelled_grid_and_logs_conditional_accuracy(real_mnist, make_trainer, tmp_path):
    L.seed_everything(0, verbose=False)
    quality = SampleQuality(every_n_epochs=1, num_samples=200, num_real=400, kid_subset_size=50, batch_size=100)
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=10,
        logger=CSVLogger(tmp_path, name="run", version=0),
        callbacks=[EpochSeed(), SampleGrid(epochs=[1], num_samples=20, nrow=2), quality],
    )
    trainer.fit(CGAN(**TINY_CGAN), MNISTDataModule(data_dir=str(real_mnist), val_size=0))
    run = tmp_path / "run" / "version_0"
    final = json.loads((run / "final_metrics.json").read_text())
    assert 0.0 <= final["conditional_accuracy"] <= 1.0 and len(final["conditional_accuracy_per_class"]) == 10
    # 20 samples per class: the overall accuracy is the mean of the per-class ones.
    assert final["conditional_accuracy"] == pytest.approx(sum(final["conditional_accuracy_per_class"]) / 10)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"quality/conditional_accuracy", "quality/fid", "quality/classes_covered"} <= set(header)
    with Image.open(run / "samples" / "epoch_001.png") as grid:
        assert grid.size != (2 * 30 + 2, 10 * 30 + 2)  # drawn with row labels, not the bare 2x10 grid


def test_the_cli_links_the_class_count_from_the_data(real_mnist, tmp_path, monkeypatch):
    """``num_classes`` flows from the datamodule (10 labels) to the model, over a value given by hand."""
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(ROOT / "configs/cgan_fashion_mnist.yaml"),
                "--data", "datamodules.MNISTDataModule", "--data.init_args.data_dir", str(real_mnist),
                "--model.init_args.num_classes", "3", "--trainer.logger", "false", "--trainer.fast_dev_run", "1",
                "--trainer.enable_progress_bar", "false"])  # fmt: skip
    assert cli.model.hparams.num_classes == 10 and cli.model.discriminator.class_embedding.num_embeddings == 10
