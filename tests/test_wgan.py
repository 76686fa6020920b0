"""The WGAN on 2-D mixtures: schedule, noise, every Lipschitz strategy in training, exact resume,
and the metrics and landscape callbacks."""

import json
import math
from functools import partial

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks import CriticLandscape, EpochSeed, MixtureMetrics
from core.errors import ConfigError
from datamodules import Grid25DataModule, Ring8DataModule
from lightning_modules import WGAN
from lightning_modules.components.lipschitz import (
    GradientPenalty,
    NoConstraint,
    SpectralNormalization,
    TorchSpectralNorm,
    WeightClipping,
    linear_layers,
)
from tests.conftest import SMALL_WGAN
from tests.probes import CheckpointAt, OptimizerLog

SMALL = partial(WGAN, **SMALL_WGAN)


def ring8(minibatches_per_step: int = 1) -> Ring8DataModule:
    """10 minibatches of 64 an epoch: two epochs make 20 critic iterations."""
    return Ring8DataModule(num_samples=640, batch_size=64, minibatches_per_step=minibatches_per_step)


def critic_spectral_norms(model):
    return [torch.linalg.matrix_norm(layer.weight.detach(), 2).item() for layer in linear_layers(model.discriminator)]


def test_defaults_follow_the_homework_schedule_and_optimizers(fit_tiny):
    log = OptimizerLog()
    trainer, model = fit_tiny(SMALL, ring8(), max_epochs=2, callbacks=[EpochSeed(), log])
    assert "".join(log.steps) == "DDDDDG" * 4  # 20 critic iterations, generator when k mod 5 == 0
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["betas"] == opt_d.param_groups[0]["betas"] == (0.0, 0.9)
    assert [m for m in model.generator.modules() if isinstance(m, torch.nn.ReLU)] and model.latent_dim == 2


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_noise_comes_from_torch_distributions_and_is_reproducible_from_a_seed(noise):
    model = WGAN(noise=noise, latent_dim=3)
    w = model.sample_latent(20_000)
    assert w.shape == (20_000, 3)
    if noise == "uniform":
        assert w.min() >= -1 and w.max() <= 1 and w.var().item() == pytest.approx(1 / 3, rel=0.05)
    else:
        assert w.var().item() == pytest.approx(1.0, rel=0.05)
    seeded = [model.sample_latent(5, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*seeded)


def test_weight_clipping_keeps_every_critic_weight_within_c(fit_tiny):
    _, model = fit_tiny(partial(SMALL, lipschitz=WeightClipping(0.05)), ring8(), max_epochs=2, callbacks=[EpochSeed()])
    parameters = torch.cat([p.detach().flatten() for p in model.discriminator.parameters()])
    assert parameters.abs().max() <= 0.05 and (parameters.abs() == 0.05).any()


def test_hand_written_spectral_norm_holds_during_training(fit_tiny):
    one_iteration = partial(SMALL, lipschitz=SpectralNormalization(n_power_iterations=1))
    _, model = fit_tiny(one_iteration, ring8(), max_epochs=2, callbacks=[EpochSeed()])
    norms = critic_spectral_norms(model)
    assert all(n <= 1 + 1e-3 for n in norms) and torch.tensor(norms).prod() <= 1 + 1e-3
    assert all(n > 0.98 for n in norms)  # renormalised to 1, not merely shrunk


def test_torch_spectral_norm_parametrizes_the_critic(fit_tiny):
    _, model = fit_tiny(partial(SMALL, lipschitz=TorchSpectralNorm()), ring8(), max_epochs=2, callbacks=[EpochSeed()])
    layers = linear_layers(model.discriminator)
    assert all(torch.nn.utils.parametrize.is_parametrized(layer, "weight") for layer in layers)
    model.discriminator.eval()  # eval: the forward uses the stored estimate, no power iteration
    assert all(torch.linalg.matrix_norm(layer.weight.detach(), 2) <= 1.05 for layer in layers)


def test_gradient_penalty_is_added_to_the_critic_loss_and_logged(fit_tiny, tmp_path):
    penalised = partial(SMALL, lipschitz=GradientPenalty(5.0))
    trainer, model = fit_tiny(penalised, ring8(), max_epochs=2, callbacks=[EpochSeed()], logger=CSVLogger(tmp_path))
    assert "train/d_penalty_epoch" in trainer.callback_metrics
    assert {
        name.removesuffix("_epoch") for name in trainer.logged_metrics if name.endswith("_epoch")
    } == model.logged_metric_names
    assert trainer.callback_metrics["train/d_penalty_epoch"] > 0


def test_no_constraint_trains_too(fit_tiny):
    trainer, _ = fit_tiny(partial(SMALL, lipschitz=NoConstraint()), ring8(), max_epochs=2, callbacks=[EpochSeed()])
    assert torch.isfinite(trainer.callback_metrics["train/d_loss_epoch"])


@pytest.mark.parametrize(
    "lipschitz", [SpectralNormalization(), TorchSpectralNorm(), GradientPenalty()], ids=lambda strategy: type(strategy).__name__
)
def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_weights(fit_tiny, tmp_path, lipschitz):
    constrained = partial(SMALL, lipschitz=lipschitz)
    _, straight = fit_tiny(constrained, ring8(), max_epochs=2, callbacks=[EpochSeed()], default_root_dir=tmp_path / "a")
    trainer, _ = fit_tiny(constrained, ring8(), max_epochs=1, callbacks=[EpochSeed()], default_root_dir=tmp_path / "b")
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    if isinstance(lipschitz, SpectralNormalization):  # the power-iteration vectors travel with the checkpoint
        assert (
            sum(
                k.endswith(SpectralNormalization.buffer_name)
                for k in torch.load(tmp_path / "mid.ckpt", weights_only=False)["state_dict"]
            )
            == 2
        )
    _, resumed = fit_tiny(
        constrained,
        ring8(),
        max_epochs=2,
        ckpt_path=tmp_path / "mid.ckpt",
        callbacks=[EpochSeed()],
        default_root_dir=tmp_path / "c",
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("minibatches_per_step", [1, 5])
def test_resuming_from_a_mid_epoch_checkpoint_ends_with_the_uninterrupted_weights(fit_tiny, tmp_path, minibatches_per_step):
    """A checkpoint between two steps of an epoch (Ctrl+C, SIGTERM, a step-interval checkpoint) carries
    the loader's place in the epoch and every rank's RNG state: the resumed run takes the epoch's
    remaining batches with the same noise."""
    log_straight, log_resumed = OptimizerLog(), OptimizerLog()
    _, straight = fit_tiny(
        SMALL, ring8(minibatches_per_step), max_epochs=2, callbacks=[EpochSeed(), log_straight], default_root_dir=tmp_path / "a"
    )
    checkpoint = tmp_path / "mid.ckpt"
    save_and_stop = CheckpointAt(1, 3 // minibatches_per_step, checkpoint)
    fit_tiny(
        SMALL, ring8(minibatches_per_step), max_epochs=2, callbacks=[EpochSeed(), save_and_stop], default_root_dir=tmp_path / "b"
    )
    _, resumed = fit_tiny(
        SMALL,
        ring8(minibatches_per_step),
        max_epochs=2,
        ckpt_path=checkpoint,
        callbacks=[EpochSeed(), log_resumed],
        default_root_dir=tmp_path / "c",
    )
    steps_left = len(log_straight.steps) - len(log_resumed.steps)
    # epoch 0 (10 critic + 2 generator steps) and epoch 1 up to the checkpoint (4 critic, or 5 + 1 generator steps)
    assert steps_left == (12 + 4 if minibatches_per_step == 1 else 12 + 6)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise": "cauchy"}, "model.noise"),
        ({"sample_shape": (1, 28, 28)}, "one dimension"),
        ({"n_critic": 0}, "model.n_critic"),
    ],
)
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        WGAN(**kwargs)


def test_mixture_metrics_score_the_true_distribution_as_perfect_and_a_collapsed_one_as_one_mode():
    dm = Grid25DataModule(num_samples=100)
    metrics = MixtureMetrics(num_samples=2500, mmd_bandwidth=0.5)
    perfect = metrics.measure(dm.sample(2500, seed=5)[0], dm)
    # a 2-D isotropic Gaussian lies within 3 std of its mean with probability 1 - exp(-9/2) = 98.9 %
    assert perfect["modes"] == 25 and perfect["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    assert perfect["reverse_kl"] < 0.02
    assert abs(perfect["mmd2"]) < 1e-3 and perfect["sliced_w1"] < 0.1
    collapsed = metrics.measure(torch.zeros(2500, 2) + 0.01 * torch.randn(2500, 2), dm)
    assert collapsed["modes"] == 1 and collapsed["reverse_kl"] == pytest.approx(torch.log(torch.tensor(25.0)).item(), rel=1e-5)
    assert collapsed["mmd2"] > 100 * abs(perfect["mmd2"]) and collapsed["js"] > perfect["js"]


def test_metrics_and_landscape_callbacks_write_their_files_and_log(fit_tiny, tmp_path):
    logger = CSVLogger(tmp_path, name="run", version=0)
    callbacks = [
        MixtureMetrics(every_n_iterations=5, num_samples=500),
        CriticLandscape(iterations=[5, 15], num_samples=200, resolution=20),
    ]
    fit_tiny(SMALL, ring8(), max_epochs=2, logger=logger, callbacks=[EpochSeed(), *callbacks])
    run = tmp_path / "run" / "version_0"
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["iteration"] == 20 and {"modes", "high_quality", "reverse_kl", "mmd2", "sliced_w1", "kl", "js"} <= final.keys()
    assert [step for step, _ in callbacks[0].history["modes"]] == [5, 10, 15, 20]
    assert (run / "mixture_metrics.png").stat().st_size > 1000 and (run / "landscape.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "landscape").iterdir()) == [
        "iteration_0000005.png",
        "iteration_0000015.png",
        "iteration_0000020.png",
    ]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"eval/modes", "eval/high_quality", "eval/mmd2", "train/wasserstein_estimate_epoch"} <= set(header)


@pytest.mark.parametrize("lipschitz", [SpectralNormalization(), GradientPenalty()], ids=lambda strategy: type(strategy).__name__)
def test_one_wgan_iteration_per_training_step_makes_the_same_updates(fit_tiny, lipschitz):
    """5 minibatches per training step (n_critic = 5: one generator step each) against 1: the
    same critic and generator updates in the same order, so the same weights and epoch means."""
    constrained = partial(SMALL, lipschitz=lipschitz)
    one_trainer, one = fit_tiny(constrained, ring8(), max_epochs=2, callbacks=[EpochSeed()])
    five_trainer, five = fit_tiny(constrained, ring8(minibatches_per_step=5), max_epochs=2, callbacks=[EpochSeed()])
    assert five.critic_updates == one.critic_updates == 20 and five_trainer.global_step == one_trainer.global_step == 24
    for (name, a), b in zip(one.state_dict().items(), five.state_dict().values()):
        assert torch.equal(a, b), name
    for name in ("train/d_loss_epoch", "train/g_loss_epoch", "train/d_grad_norm_epoch"):
        torch.testing.assert_close(five_trainer.callback_metrics[name], one_trainer.callback_metrics[name])


def test_callbacks_act_at_the_training_step_that_reaches_their_iteration(fit_tiny, tmp_path):
    """Groups of 3 minibatches over 10 per epoch end steps at iterations 3, 6, 9, 10, 13, 16, 19, 20."""
    metrics, landscape = (
        MixtureMetrics(every_n_iterations=5, num_samples=200),
        CriticLandscape(iterations=[5, 15], num_samples=100, resolution=10),
    )
    fit_tiny(
        SMALL,
        ring8(minibatches_per_step=3),
        max_epochs=2,
        callbacks=[EpochSeed(), metrics, landscape],
        logger=CSVLogger(tmp_path, name="run", version=0),
    )
    assert [iteration for iteration, _ in metrics.history["modes"]] == [6, 10, 16, 20]
    assert [snapshot["iteration"] for snapshot in landscape.snapshots] == [6, 16, 20]
