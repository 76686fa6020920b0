"""Datamodules on the real datasets (through torchvision's readers) and on synthetic files in the same formats."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from core.errors import CorruptDatasetError, DataConfigError, DatasetNotFoundError
from datamodules import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from datamodules.loaders import EpochShardSampler
from tests.conftest import cifar_tree, write_synthetic_mnist


def batches(loader):
    return [tuple(t.clone() for t in batch) for batch in loader]


# --- real data ---------------------------------------------------------------------------------
def test_real_mnist_sizes_shapes_and_metadata(real_mnist):
    dm = MNISTDataModule(data_dir=str(real_mnist), val_size=0)
    dm.setup("fit")
    assert (dm.split_size("train"), dm.split_size("val"), dm.split_size("test")) == (60000, 0, 10000)
    images, labels = dm.split_tensors("train")
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert dm.image_shape == (1, 28, 28) and dm.num_classes == 10 and dm.class_names[3] == "3"

    held_out = MNISTDataModule(data_dir=str(real_mnist), val_size=5000)
    held_out.setup("fit")
    assert (held_out.split_size("train"), held_out.split_size("val")) == (55000, 5000)


@pytest.mark.parametrize(
    "normalization, low, high", [("symmetric", -1.0, 1.0), ("unit", 0.0, 1.0), ("mean_std", -0.4242, 2.8215)]
)
def test_real_mnist_value_range_per_normalization(real_mnist, normalization, low, high):
    dm = MNISTDataModule(data_dir=str(real_mnist), val_size=0, normalization=normalization, batch_size=10000)
    dm.setup("fit")
    images, labels = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.float32 and labels.shape == (10000,)
    assert images.min().item() == pytest.approx(low, abs=1e-4) and images.max().item() == pytest.approx(high, abs=1e-4)
    if normalization == "mean_std":  # the training-set statistics standardise the test set too
        assert images.mean().item() == pytest.approx(0.0, abs=0.02) and images.std().item() == pytest.approx(1.0, abs=0.02)
    restored = dm.denormalize(images)
    torch.testing.assert_close(restored * 255, dm.split_tensors("test")[0].float(), atol=1e-3, rtol=0)


def test_real_fashion_mnist(real_fashion_mnist):
    dm = FashionMNISTDataModule(data_dir=str(real_fashion_mnist), val_size=0)
    dm.setup("fit")
    assert (dm.split_size("train"), dm.split_size("test")) == (60000, 10000)
    assert dm.split_tensors("test")[1].bincount().tolist() == [1000] * 10
    assert dm.class_names[9] == "Ankle boot"


def test_real_cifar10_image_folder(real_cifar10_images):
    dm = CIFAR10DataModule(data_dir=str(real_cifar10_images), val_size=5000, normalization="mean_std")
    assert dm.resolved_layout() == "image_folder"
    dm.setup("fit")
    assert (dm.split_size("train"), dm.split_size("val"), dm.split_size("test")) == (45000, 5000, 10000)
    images, labels = dm.split_tensors("test")
    assert images.shape == (10000, 3, 32, 32) and labels.bincount().tolist() == [1000] * 10
    mean = images.float().div(255).mean(dim=(0, 2, 3))
    torch.testing.assert_close(mean, torch.tensor(dm.mean), atol=0.01, rtol=0)


def test_decoded_cifar10_images_are_reused_until_a_file_changes(tmp_path, monkeypatch):
    from datamodules import cifar10

    tree = cifar_tree(tmp_path)
    decode = cifar10._read_rgb
    calls = []
    monkeypatch.setattr(cifar10, "_read_rgb", lambda path, shape: calls.append(path) or decode(path, shape))

    def load() -> torch.Tensor:
        dm = CIFAR10DataModule(data_dir=str(tmp_path), val_size=0, batch_size=4)
        dm.setup("fit")
        return dm.split_tensors("train")[0]

    first = load()
    assert (
        len(calls) == 40 and (tree / ".decoded_train.pt").is_file() and not list(tree.glob("*.tmp"))
    )  # 20 train + 20 test images
    torch.testing.assert_close(load(), first)
    assert len(calls) == 40  # the second run decoded nothing
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(tree / "train/cat/0001.png")
    changed = load()
    assert (
        len(calls) == 60 and (changed != first).any()
    )  # a training file changed: that split is decoded again, not the test split
    (tree / ".decoded_train.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="decoded_train.pt is unreadable"):
        torch.testing.assert_close(load(), changed)


# --- the fast path and its sharding ------------------------------------------------------------
def test_in_memory_batches_equal_torchvision_per_item_batches(synthetic_mnist):
    fast = MNISTDataModule(data_dir=str(synthetic_mnist), val_size=32, batch_size=16)
    slow = MNISTDataModule(data_dir=str(synthetic_mnist), val_size=32, batch_size=16, in_memory=False)
    for dm in (fast, slow):
        dm.setup("fit")
    for split in ("val_dataloader", "test_dataloader"):
        for (x_fast, y_fast), (x_slow, y_slow) in zip(
            batches(getattr(fast, split)()), batches(getattr(slow, split)()), strict=True
        ):
            assert torch.equal(x_fast, x_slow) and torch.equal(y_fast, y_slow)
    assert len(fast.train_dataloader()) == len(slow.train_dataloader()) == (256 - 32) // 16
    indices = torch.tensor([0, 5, 100, 223])
    assert torch.equal(fast.images("train", indices), slow.images("train", indices))
    assert fast.images("train", indices).dtype == torch.uint8


def test_shuffling_is_seeded_per_epoch(synthetic_mnist):
    dm = MNISTDataModule(data_dir=str(synthetic_mnist), val_size=0, batch_size=32)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    epoch0 = batches(loader)
    loader.sampler.set_epoch(1)
    epoch1 = batches(loader)
    loader.sampler.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, batches(loader)))
    assert not torch.equal(epoch0[0][0], epoch1[0][0])


@pytest.mark.parametrize("minibatches_per_step", [1, 3])
def test_a_loader_restored_mid_epoch_hands_out_the_rest_of_that_epoch(synthetic_mnist, minibatches_per_step):
    dm = MNISTDataModule(data_dir=str(synthetic_mnist), val_size=0, batch_size=16, minibatches_per_step=minibatches_per_step)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    whole_epoch = list(loader)
    taken = iter(loader)
    for _ in range(3):
        next(taken)
    state = loader.state_dict()
    assert state == {"epoch": 2, "steps_taken": 3}

    restored = dm.train_dataloader()
    restored.load_state_dict(state)
    restored.sampler.set_epoch(2)
    rest = list(restored)
    assert len(rest) == len(whole_epoch) - 3
    flat = [pair for step in rest for pair in (step if minibatches_per_step > 1 else [step])]
    expected = [pair for step in whole_epoch[3:] for pair in (step if minibatches_per_step > 1 else [step])]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(flat, expected, strict=True))
    assert len(list(restored)) == len(whole_epoch)  # the skip applies once: the next pass is a whole epoch
    restored.load_state_dict(state)
    restored.sampler.set_epoch(3)  # a state of another epoch (saved at its end) skips nothing
    assert len(list(restored)) == len(whole_epoch)


@pytest.mark.parametrize("num_samples, world_size, pad", [(100, 2, False), (101, 2, False), (101, 4, True), (7, 3, True)])
def test_rank_shards_are_disjoint_and_equal_sized(num_samples, world_size, pad):
    shards = [EpochShardSampler(num_samples, True, 0, rank, world_size, pad).indices() for rank in range(world_size)]
    assert len({len(s) for s in shards}) == 1
    everything = torch.cat(shards)
    if pad:  # evaluation: every sample seen at least once, a few twice
        assert set(everything.tolist()) == set(range(num_samples))
    else:  # training: no sample on two ranks, at most world_size - 1 left out
        assert len(set(everything.tolist())) == len(everything) >= num_samples - world_size + 1


# --- bad input ---------------------------------------------------------------------------------
def test_missing_data_without_network_names_the_fix(tmp_path, monkeypatch):
    # An unroutable mirror stands in for "no network"; torchvision's real download code runs.
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    dm = MNISTDataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(DatasetNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "Downloading failed" in message and "train-images-idx3-ubyte" in message
    assert "tar xzf ../shared/data/MNIST-raw.tar.gz" in message
    assert not any(p.name.endswith("ubyte") for p in tmp_path.rglob("*")), "no half-downloaded files left"


def test_missing_data_without_download_names_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="FashionMNIST is missing from .*t10k-labels-idx1-ubyte"):
        FashionMNISTDataModule(data_dir=str(tmp_path), download=False).setup("fit")


def test_truncated_idx_file_is_named(tmp_path):
    root = write_synthetic_mnist(tmp_path)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(
        CorruptDatasetError, match=r"train-images-idx3-ubyte is truncated or corrupt: \d+ bytes, the header promises \d+"
    ):
        MNISTDataModule(data_dir=str(root)).setup("fit")


def test_cifar10_pickles_failing_torchvision_integrity_check(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": [], "labels": []}))
    with pytest.raises(CorruptDatasetError, match="failed torchvision's integrity check"):
        CIFAR10DataModule(data_dir=str(tmp_path)).setup("fit")


def test_cifar10_missing_names_both_layouts(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py.*CIFAR-10-images"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup("fit")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"val_size": -1}, "data.val_size"),
        ({"normalization": "zscore"}, "data.normalization"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(DataConfigError, match=match):
        MNISTDataModule(**kwargs)


def test_val_size_larger_than_the_data(synthetic_mnist):
    with pytest.raises(DataConfigError, match="leaves no training data"):
        MNISTDataModule(data_dir=str(synthetic_mnist), val_size=10_000).setup("fit")


def test_synthetic_fixture_is_readable_by_torchvision(synthetic_mnist: Path):
    dataset = datasets.MNIST(str(synthetic_mnist), train=True)
    assert len(dataset) == 256 and dataset[3][1] == 3


@pytest.mark.parametrize(
    ("device", "setting", "on_device"),
    [("cuda", "auto", True), ("cpu", "auto", False), ("cuda", False, False), ("cpu", True, True), ("mps", "auto", True)],
)
def test_data_on_device_auto_keeps_the_splits_on_an_accelerator_only(device, setting, on_device):
    from datamodules.image_datamodule import keeps_data_on

    assert keeps_data_on(torch.device(device), setting) is on_device


def test_a_data_on_device_value_that_is_neither_bool_nor_auto_is_one_clear_line(tmp_path):
    with pytest.raises(DataConfigError, match="data.data_on_device must be true, false or auto, got 'gpu'"):
        MNISTDataModule(data_dir=str(tmp_path), data_on_device="gpu")
