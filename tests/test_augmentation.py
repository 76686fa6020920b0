"""Batch augmentation: each image a crop of its zero-padded self, mirrored or not, drawn per image;
applied to training batches only."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from core.errors import DataConfigError
from datamodules import MNISTDataModule
from datamodules.augmentation import RandomCropFlip


def possible_draws(padding: int) -> list[tuple[int, int, bool]]:
    """Every (row offset, column offset, mirrored) an image's augmentation may draw."""
    return [(dy, dx, mirrored) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1) for mirrored in (False, True)]


def test_each_image_is_a_crop_of_its_padded_self_mirrored_or_not_drawn_per_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)  # no zero pixel: padding is recognisable
    augmented = RandomCropFlip(padding=2)(images)
    assert augmented.shape == images.shape and augmented.dtype == torch.uint8
    padded = F.pad(images, (2, 2, 2, 2))
    draws = []
    for original, result in zip(padded, augmented):
        crops = {(dy, dx, mirrored): original[:, dy : dy + 8, dx : dx + 8] for dy, dx, mirrored in possible_draws(2)}
        matches = [draw for draw, crop in crops.items() if torch.equal(result, crop.flip(-1) if draw[2] else crop)]
        assert len(matches) == 1
        draws.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in draws}) > 10  # offsets differ between images of one batch
    assert 16 < sum(mirrored for *_, mirrored in draws) < 48


def test_no_padding_and_no_flip_is_the_identity_and_negative_padding_is_refused():
    images = torch.rand(4, 1, 5, 5)
    torch.testing.assert_close(RandomCropFlip(padding=0, flip=False)(images), images)
    with pytest.raises(DataConfigError, match="RandomCropFlip.padding must be >= 0"):
        RandomCropFlip(padding=-1)


def test_only_training_batches_are_augmented(synthetic_mnist):
    datamodule = MNISTDataModule(
        data_dir=str(synthetic_mnist), batch_size=8, val_size=0, normalization="unit", augmentation=RandomCropFlip(padding=4)
    )
    datamodule.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    batch = (torch.randint(1, 256, (8, 1, 28, 28), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    datamodule.trainer.testing = True
    torch.testing.assert_close(datamodule.on_after_batch_transfer(batch, 0)[0], batch[0].float() / 255)
    datamodule.trainer.training = True
    torch.manual_seed(0)
    assert not torch.equal(datamodule.on_after_batch_transfer(batch, 0)[0], batch[0].float() / 255)
