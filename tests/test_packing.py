"""Packing (PacGAN): D judges m samples at once; and the maxout units of PacGAN's discriminator."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from benchmarks.pacgan_reference import BlocksAdam
from callbacks import CriticLandscape, EpochSeed
from core.errors import ConfigError
from datamodules import Ring8DataModule
from datamodules.population import data_order_seed
from lightning_modules import CGAN, GAN, WGAN
from lightning_modules.components.adversarial import AdversarialModule
from lightning_modules.components.lipschitz import GradientPenalty, SpectralNormalization
from lightning_modules.components.mlp import LinearMaxout
from lightning_modules.components.packing import pack_samples, packed_shape
from lightning_modules.components.population import member_state
from tests.conftest import ROOT, SMALL_WGAN, TINY_CGAN

#: PacGAN's networks, small: G with batch norm and ReLU, D of maxout units.
PACGAN_SMALL = {
    "sample_shape": (2,), "latent_dim": 2, "generator_hidden": (16, 16), "discriminator_hidden": (8, 8),
    "negative_slope": 0.0, "dropout": 0.0, "maxout_pieces": 5, "generator_batch_norm": True, "output_activation": "none",
}  # fmt: skip


def ring8(**options) -> Ring8DataModule:
    return Ring8DataModule(num_samples=640, batch_size=64, **options)


def test_a_pack_is_m_consecutive_samples_side_by_side():
    points = torch.arange(24.0).reshape(12, 2)
    packs = pack_samples(points, 3, sample_dim=0)
    assert packs.shape == (4, 6)
    assert torch.equal(packs[1], torch.cat([points[3], points[4], points[5]]))
    images = torch.randn(8, 1, 28, 28)
    assert pack_samples(images, 4, 0).shape == (2, 4, 28, 28) == (2, *packed_shape((1, 28, 28), 4))
    population = torch.randn(3, 12, 2)  # (P, m, 2): packs within each member
    assert torch.equal(pack_samples(population, 3, 1)[2], pack_samples(population[2], 3, 0))
    assert pack_samples(points, 1, 0) is points


def test_the_packed_gan_loss_is_the_hand_computation():
    torch.manual_seed(0)
    model = GAN(**PACGAN_SMALL, pack=4)
    real, z = torch.randn(16, 2), torch.randn(16, 2)
    d_loss, fake, _ = model.discriminator_loss(real, z, None)
    logits = [model.discriminator(torch.stack([torch.cat(list(x[4 * i : 4 * i + 4])) for i in range(4)])) for x in (real, fake)]
    assert logits[0].shape == (4,)
    expected = F.softplus(-logits[0]).mean() + F.softplus(logits[1]).mean()
    torch.testing.assert_close(d_loss, expected)


def test_a_packed_gradient_penalty_differentiates_whole_packs():
    """For a linear critic d(pack) = w . pack the gradient at every pack is w, whatever the interpolation:
    the penalty is lambda (|w| - 1)^2 with |w| over all 2m coordinates, not one sample's 2."""
    model = WGAN(**SMALL_WGAN, lipschitz=GradientPenalty(10.0), pack=3)
    model.discriminator = nn.Sequential(nn.Flatten(start_dim=-1), nn.Linear(6, 1), nn.Flatten(start_dim=-2))
    packs = model.packed(torch.randn(12, 2)), model.packed(torch.randn(12, 2))
    penalty = model.lipschitz.penalty(lambda x: model.score_packs(x, None), *packs)
    weight_norm = model.discriminator[1].weight.norm()
    torch.testing.assert_close(penalty, 10.0 * (weight_norm - 1) ** 2)


def original_score(self, images, labels):
    """``AdversarialModule.score`` before packing existed."""
    return self.discriminator(images)


def original_score_real_and_fake(self, real, fake, labels):
    if not self.scores_jointly:
        return self.score(real, labels), self.score(fake, labels)
    samples = self.batch_dims - 1
    both_labels = None if labels is None else torch.cat([labels, labels], dim=samples)
    return self.score(torch.cat([real, fake], dim=samples), both_labels).split(real.shape[samples], dim=samples)


@pytest.mark.parametrize("lipschitz", [SpectralNormalization(), GradientPenalty()], ids=["spectral norm", "penalty"])
def test_pack_1_trains_bit_for_bit_as_before_packing(fit_tiny, monkeypatch, lipschitz):
    _, packed_code = fit_tiny(partial(WGAN, **SMALL_WGAN, lipschitz=lipschitz), ring8(), max_epochs=2)
    monkeypatch.setattr(AdversarialModule, "score", original_score)
    monkeypatch.setattr(AdversarialModule, "score_real_and_fake", original_score_real_and_fake)
    _, before = fit_tiny(partial(WGAN, **SMALL_WGAN, lipschitz=lipschitz), ring8(), max_epochs=2)
    for (name, a), b in zip(packed_code.state_dict().items(), before.state_dict().values()):
        assert torch.equal(a, b), name


def test_maxout_units_are_the_largest_of_their_pieces():
    torch.manual_seed(0)
    layer = LinearMaxout(3, 4, pieces=5)
    x = torch.randn(7, 3)
    pieces = (x @ layer.linear.weight.T + layer.linear.bias).reshape(7, 4, 5)
    torch.testing.assert_close(layer(x), pieces.max(-1).values)
    assert layer(torch.randn(2, 7, 3)).shape == (2, 7, 4)
    with pytest.raises(ConfigError, match="maxout_pieces must be an integer >= 2"):
        LinearMaxout(3, 4, pieces=1)


@pytest.mark.parametrize("model", ["PacGAN's GAN", "WGAN, gradient penalty"])
def test_each_packed_member_equals_its_run_alone(fit_tiny, model):
    """A population of packing models: maxout, batch norm and the packed penalty member by member."""
    seeds = [3, 7]
    build = (
        partial(GAN, **PACGAN_SMALL, pack=2)
        if model == "PacGAN's GAN"
        else partial(WGAN, **SMALL_WGAN, lipschitz=GradientPenalty(), pack=4)
    )
    options = {"max_epochs": 3, "precision": "64-true", "callbacks": [EpochSeed()]}
    _, population = fit_tiny(partial(build, seeds=seeds), ring8(population_seeds=seeds), **options)
    for member, seed in enumerate(seeds):
        _, alone = fit_tiny(build, ring8(shuffle_seed=data_order_seed(0, seed)), seed=seed, **options)
        for name, value in member_state(population.state_dict(), member).items():
            torch.testing.assert_close(value, alone.state_dict()[name], rtol=1e-6, atol=1e-9, msg=f"member {member}, {name}")


def test_a_packing_critics_landscape_scores_packs_of_one_point(fit_tiny, tmp_path):
    landscape = CriticLandscape(iterations=[5], num_samples=64, resolution=8)
    fit_tiny(partial(WGAN, **SMALL_WGAN, pack=4), ring8(), callbacks=[landscape])
    assert landscape.snapshots[0]["critic"].shape == (8, 8)
    assert list(tmp_path.rglob("landscape.png"))


def test_a_pack_that_cannot_work_is_one_clear_line(fit_tiny):
    with pytest.raises(ConfigError, match="model.pack .* must be an integer >= 1"):
        WGAN(**SMALL_WGAN, pack=0)
    with pytest.raises(ConfigError, match="a CGAN does not pack"):
        CGAN(**TINY_CGAN, pack=2)
    with pytest.raises(ConfigError, match="model.pack=5 must divide the batch size, got data.batch_size=64"):
        fit_tiny(partial(WGAN, **SMALL_WGAN, pack=5), ring8())


def test_pacgans_config_builds_its_networks_with_its_init():
    """configs/base/pacgan.yaml: G 2 -> 4 x (400, batch norm, ReLU) -> 2; D on packs of m = 2 (4 inputs), 3 x 200 maxout
    units of 5 pieces -> one logit; every linear weight N(0, 0.02^2), every bias 0."""
    settings = yaml.safe_load((ROOT / "configs/base/pacgan.yaml").read_text())["model"]["init_args"]
    torch.manual_seed(0)
    gan = GAN(sample_shape=(2,), pack=2, **settings)
    generator_layers = [type(layer).__name__ for layer in gan.generator.net[0]]
    assert generator_layers == ["Linear", "BatchNorm1d", "ReLU"] * 4 and gan.generator.net[1].out_features == 2
    maxouts = [layer for layer in gan.discriminator.modules() if isinstance(layer, LinearMaxout)]
    assert [(m.linear.in_features, m.out_features, m.pieces) for m in maxouts] == [(4, 200, 5), (200, 200, 5), (200, 200, 5)]
    linears = [
        layer for network in (gan.generator, gan.discriminator) for layer in network.modules() if isinstance(layer, nn.Linear)
    ]
    weights = torch.cat([layer.weight.flatten() for layer in linears])
    assert weights.std().item() == pytest.approx(0.02, rel=0.01) and abs(weights.mean().item()) < 2e-4
    assert all(not layer.bias.any() for layer in linears)
    with pytest.raises(ConfigError, match="model.weight_init_std must be > 0"):
        GAN(sample_shape=(2,), weight_init_std=0.0)


def test_pacgans_optimizer_is_blocks_adam_with_its_beta1_of_0_8():
    """PacGAN's code: ``Adam(learning_rate=1e-4, beta1=0.8)`` of Blocks, for D and G. In PyTorch's convention that is
    betas (0.2, 0.999), the config's; PyTorch's (0.8, 0.999) would be a different optimizer (a 5x longer momentum).
    Blocks' rule as benchmarks/pacgan_reference.py writes it out (its betas weight the *new* gradient)."""
    settings = yaml.safe_load((ROOT / "configs/base/pacgan.yaml").read_text())["model"]["init_args"]
    gan = GAN(sample_shape=(2,), **settings)
    torch.manual_seed(0)
    gradients = [torch.randn(200 * 5, 2) * (1 + t % 3) for t in range(30)]
    for optimizer, network in zip(gan.configure_optimizers(), (gan.generator, gan.discriminator)):
        weight = next(network.parameters())
        start, reference = weight.detach().clone(), weight.detach().clone()
        blocks_adam = BlocksAdam([reference], lr=1e-4, beta1=0.8)
        for gradient in gradients:
            weight.grad = gradient[: weight.shape[0], : weight.shape[1]].clone()
            optimizer.step()
            blocks_adam.step([weight.grad])
        assert (reference - start).abs().max() > 1e-3  # 30 steps of ~1e-4 each: the weights moved
        torch.testing.assert_close(weight.detach(), reference, rtol=0, atol=1e-7)
