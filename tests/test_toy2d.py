"""2-D Gaussian mixtures: the presets' geometry, the fixed empirical sample, and bad settings."""

import math

import pytest
import torch

from core.errors import DataConfigError
from datamodules import GaussianMixtureDataModule, Grid25DataModule, Ring8DataModule


def setup(dm):
    dm.setup("fit")
    return dm


def test_ring8_matches_pacgan_protocol():
    dm = setup(Ring8DataModule(num_samples=8000))
    assert dm.num_modes == 8
    torch.testing.assert_close(dm.means.norm(dim=1), torch.ones(8))
    angles = torch.atan2(dm.means[:, 1], dm.means[:, 0]).remainder(2 * math.pi).sort().values
    torch.testing.assert_close(angles.diff(), torch.full((7,), math.pi / 4))
    offsets = dm.points - dm.means[dm.labels]
    assert offsets.std().item() == pytest.approx(0.01, rel=0.05)
    assert dm.labels.bincount(minlength=8).min() > 800


def test_grid25_matches_pacgan_protocol():
    dm = setup(Grid25DataModule(num_samples=25_000))
    assert sorted(set(dm.means.flatten().tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0] and dm.num_modes == 25
    assert (dm.points - dm.means[dm.labels]).std().item() == pytest.approx(0.05, rel=0.05)
    torch.testing.assert_close(dm.mode_stds, torch.full((25,), 0.05))


def test_a_scaled_grid_is_the_grid_in_other_units_as_the_wgan_gp_toy_divides_it():
    grid, scaled = setup(Grid25DataModule(num_samples=2_000)), setup(Grid25DataModule(num_samples=2_000, scale=1 / 2.828))
    torch.testing.assert_close(scaled.points, grid.points / 2.828)  # the same draws, in the toy's units
    torch.testing.assert_close(scaled.mode_stds, torch.full((25,), 0.05 / 2.828))
    assert torch.equal(scaled.labels, grid.labels)


def test_custom_mixture_follows_its_covariances_and_weights():
    covariances = [[[0.5, 0.3], [0.3, 0.4]], [[0.1, 0.0], [0.0, 0.2]]]
    dm = setup(GaussianMixtureDataModule(means=[[0, 0], [5, 5]], covariances=covariances, weights=[3, 1], num_samples=40_000))
    assert dm.labels.float().mean().item() == pytest.approx(0.25, abs=0.01)
    first = dm.points[dm.labels == 0]
    torch.testing.assert_close(torch.cov(first.T), torch.tensor(covariances[0]), atol=0.02, rtol=0)


def test_empirical_sample_is_fixed_by_its_seed_and_independent_of_the_training_rng():
    torch.manual_seed(1)
    a = setup(Ring8DataModule(sample_seed=3)).points
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = setup(Ring8DataModule(sample_seed=3)).points
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(a, setup(Ring8DataModule(sample_seed=4)).points)


def test_batches_cover_the_sample_once_per_epoch():
    dm = setup(Ring8DataModule(num_samples=1024, batch_size=128))
    loader = dm.train_dataloader()
    points = torch.cat([batch[0] for batch in loader])
    assert len(loader) == 8 and points.shape == (1024, 2)
    assert torch.equal(torch.unique(points, dim=0), torch.unique(dm.points, dim=0))  # every point exactly once


def test_minibatches_per_step_groups_the_same_batches_in_the_same_order():
    single = list(setup(Ring8DataModule(num_samples=1000, batch_size=64)).train_dataloader())
    loader = setup(Ring8DataModule(num_samples=1000, batch_size=64, minibatches_per_step=4)).train_dataloader()
    groups = list(loader)
    assert len(single) == 15 and len(loader) == len(groups) == 4 and [len(g) for g in groups] == [4, 4, 4, 3]
    for (a, a_labels), (b, b_labels) in zip(single, [minibatch for group in groups for minibatch in group]):
        assert torch.equal(a, b) and torch.equal(a_labels, b_labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"means": [[0.0, 0.0, 0.0]]}, "data.means"),
        ({"means": [[0, 0]], "covariances": [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]}, "one 2x2 matrix per mean"),
        ({"means": [[0, 0]], "covariances": [[[1, 2], [2, 1]]]}, "positive definite"),
        ({"means": [[0, 0], [1, 1]], "weights": [1, -1]}, "data.weights"),
        ({"std": 0.0}, "data.std"),
        ({"num_samples": 0}, "positive"),
        ({"minibatches_per_step": 0}, "data.minibatches_per_step must be >= 1"),
        ({"scale": 0.0}, "data.scale must be > 0"),
    ],
)
def test_bad_mixture_settings(kwargs, match):
    with pytest.raises(DataConfigError, match=match):
        GaussianMixtureDataModule(**kwargs)
