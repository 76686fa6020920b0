"""The classifier as the CIFAR-10 study trains it: the network and optimizer chosen by config, the
tutorial's running loss, test accuracy at chosen epochs and the test confusion matrix."""

import json
from functools import partial

import lightning as L
import pytest
import torch

from callbacks import TestConfusion, TestSplitMetrics
from callbacks.batch_contract import RequireBatchesTheModelAccepts
from core.errors import ConfigError, DataConfigError
from datamodules import MNISTDataModule
from lightning_modules import Autoencoder, Classifier
from lightning_modules.components.lenet import LeNet
from tests.conftest import ROOT
from tests.test_configs import resolved

SMALL = partial(LeNet, channels=(4, 8), hidden=(16,))


class RecordLosses(L.Callback):
    """Each batch's training loss, and the running loss whenever one was logged at that batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.running: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())
        if (batch_idx + 1) % pl_module.hparams.running_loss_batches == 0:
            self.running.append((trainer.current_epoch, batch_idx, trainer.callback_metrics["train/running_loss"].item()))


def test_running_loss_is_the_mean_of_each_block_of_minibatches_within_an_epoch(synthetic_mnist, make_trainer):
    datamodule = MNISTDataModule(
        data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="mean_std", drop_last=False
    )  # 8 batches
    record = RecordLosses()
    L.seed_everything(0, verbose=False)
    trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[record])
    trainer.fit(
        Classifier(network=SMALL, optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9), running_loss_batches=3), datamodule
    )
    assert [(epoch, batch) for epoch, batch, _ in record.running] == [(0, 2), (0, 5), (1, 2), (1, 5)]  # batches 7-8 make no point
    for epoch, batch, value in record.running:
        block = record.losses[epoch * 8 + batch - 2 : epoch * 8 + batch + 1]
        assert value == pytest.approx(sum(block) / 3, rel=1e-6)


def test_test_accuracy_at_chosen_epochs_and_the_confusion_matrix_agree_with_trainer_test(synthetic_mnist, make_trainer, tmp_path):
    datamodule = MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="mean_std")
    L.seed_everything(0, verbose=False)
    trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[TestSplitMetrics(every_n_epochs=1), TestConfusion()])
    model = Classifier(network=SMALL)
    trainer.fit(model, datamodule)
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    (tested,) = trainer.test(model, datamodule, verbose=False)
    assert final["test_acc"] == final["test_acc_epoch_2"] == pytest.approx(tested["test/acc"], abs=1e-6)
    assert final["test_loss"] == pytest.approx(tested["test/loss"], rel=1e-5) and "test_acc_epoch_1" in final
    confusion = torch.tensor(final["test_confusion"])
    assert (
        confusion.sum() == 64
        and confusion.sum(1).tolist() == torch.bincount(datamodule.split_tensors("test")[1], minlength=10).tolist()
    )
    assert confusion.diag().sum().item() / 64 == pytest.approx(final["test_acc"], abs=1e-6)
    per_class = final["test_class_accuracy"]
    assert list(per_class) == [str(digit) for digit in range(10)]
    assert per_class["3"] == pytest.approx(confusion[3, 3].item() / confusion[3].sum().item())
    assert (tmp_path / "test_confusion.png").stat().st_size > 10_000


def test_the_study_config_builds_the_tutorial_network_and_its_sgd():
    config = resolved("--config", str(ROOT / "configs/cifar10_lenet.yaml"))["model"]["init_args"]
    assert config["optimizer"]["class_path"] == "torch.optim.SGD"
    assert {k: config["optimizer"]["init_args"][k] for k in ("lr", "momentum")} == {"lr": 1e-3, "momentum": 0.9}
    network = LeNet((3, 32, 32), 10, **config["network"]["init_args"])
    assert sum(p.numel() for p in network.parameters()) == 62_006  # the tutorial's Net


def test_a_network_that_cannot_take_the_input_names_the_problem():
    with pytest.raises(ConfigError, match="a 28x28 input is too small for 3 blocks of 5x5 convolutions"):
        LeNet((1, 28, 28), 10, channels=(6, 16, 32), paddings=(0, 0, 0))
    with pytest.raises(ConfigError, match="one padding per conv block"):
        LeNet((3, 32, 32), 10, channels=(6, 16), paddings=(0,))
    with pytest.raises(ConfigError, match="model.running_loss_batches must be >= 1"):
        Classifier(running_loss_batches=0)


def test_a_step_over_a_group_of_minibatches_makes_the_same_updates_as_one_per_step(synthetic_mnist, fit_tiny):
    def mnist(group: int) -> MNISTDataModule:
        """16 minibatches an epoch: one per step, or groups of 3, 3, 3, 3, 3, 1."""
        return MNISTDataModule(
            data_dir=str(synthetic_mnist), batch_size=16, val_size=0, normalization="mean_std", minibatches_per_step=group
        )

    sgd = partial(torch.optim.SGD, lr=0.01, momentum=0.9)
    classifier = partial(Classifier, network=SMALL, optimizer=sgd, running_loss_batches=4)
    one_trainer, one = fit_tiny(classifier, mnist(1), max_epochs=2, limit_val_batches=0)
    grouped_trainer, grouped = fit_tiny(classifier, mnist(3), max_epochs=2, limit_val_batches=0)
    for a, b in zip(one.parameters(), grouped.parameters()):
        assert torch.equal(a, b)
    assert one_trainer.global_step == grouped_trainer.global_step == 32  # optimizer steps, however grouped
    for name in ("train/loss", "train/acc", "train/running_loss"):
        assert grouped_trainer.callback_metrics[name].item() == pytest.approx(one_trainer.callback_metrics[name].item(), rel=1e-6)


def test_a_model_that_takes_one_batch_per_step_refuses_groups(synthetic_mnist, make_trainer):
    datamodule = MNISTDataModule(
        data_dir=str(synthetic_mnist), batch_size=16, val_size=0, normalization="unit", minibatches_per_step=4
    )
    with pytest.raises(
        DataConfigError,
        match=(
            "data.minibatches_per_step=4 hands several minibatches to one training step, but Autoencoder takes one batch per step"
        ),
    ):
        trainer = make_trainer(max_epochs=1, callbacks=[RequireBatchesTheModelAccepts()])  # train.py gives every run this guard
        trainer.fit(Autoencoder(encoder_hidden=[8], decoder_hidden=[8]), datamodule)
