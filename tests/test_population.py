"""Populations (``model.seeds``): P runs trained as one network, each member equal to its run alone.

A member of seed s is compared with the single run of seed s (``seed_everything(s)``, ``EpochSeed``, and the
data order the population gives that seed: ``data.shuffle_seed = data_order_seed(0, s)``), parameter by
parameter, after 50 training steps in float64 (5 epochs: the per-epoch reseeding is crossed four times).
"""

import json
import math
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks import EpochSeed, MixtureMetrics, StopOnNonFiniteLoss
from cli.export import main as export_main
from core.errors import ConfigError
from datamodules import MNISTDataModule, Ring8DataModule
from datamodules.population import data_order_seed
from lightning_modules import CGAN, GAN, VAE, WGAN
from lightning_modules.components.lipschitz import (
    GradientPenalty,
    SpectralNormalization,
    SpectralRegularization,
    TorchSpectralNorm,
    WeightClipping,
)
from lightning_modules.components.losses import NonSaturatingGANLoss, SaturatingGANLoss
from lightning_modules.components.population import member_state
from tests.conftest import ROOT, SMALL_WGAN, TINY_CGAN, TINY_GAN, run_cli

SEEDS = [3, 7, 11]
STRATEGIES = [SpectralNormalization(), SpectralRegularization(), WeightClipping(), GradientPenalty()]


def ring8(**options) -> Ring8DataModule:
    return Ring8DataModule(num_samples=640, batch_size=64, **options)  # 10 batches an epoch


def assert_member_equals(population, member: int, alone) -> None:
    expected = alone.state_dict()
    assert expected.keys() == population.state_dict().keys()
    for name, value in member_state(population.state_dict(), member).items():
        message = f"member {member}, {name}"
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-9, msg=lambda text, m=message: f"{m}: {text}")


@pytest.mark.parametrize("lipschitz", STRATEGIES, ids=lambda strategy: type(strategy).__name__)
def test_each_wgan_member_equals_its_run_alone(fit_tiny, lipschitz):
    options = {"max_epochs": 5, "precision": "64-true", "callbacks": [EpochSeed()]}
    model = partial(WGAN, **SMALL_WGAN, lipschitz=lipschitz)
    _, population = fit_tiny(partial(model, seeds=SEEDS), ring8(population_seeds=SEEDS), **options)
    for member, seed in enumerate(SEEDS):
        _, alone = fit_tiny(model, ring8(shuffle_seed=data_order_seed(0, seed)), seed=seed, **options)
        assert_member_equals(population, member, alone)


@pytest.mark.parametrize(
    ("loss", "n_critic", "batch_norm"),
    [(NonSaturatingGANLoss(), 1, False), (SaturatingGANLoss(), 5, False), (NonSaturatingGANLoss(), 1, True)],
    ids=["non-saturating", "saturating, k = 5", "batch norm in G"],
)
def test_each_gan_member_equals_its_run_alone(synthetic_mnist, fit_tiny, loss, n_critic, batch_norm):
    """D with dropout (each member's masks from its stream), G with or without batch norm (each member's statistics)."""
    options = {"max_epochs": 7, "precision": "64-true", "callbacks": [EpochSeed()], "limit_val_batches": 0}  # 8 batches an epoch
    model = partial(GAN, **TINY_GAN, loss=loss, n_critic=n_critic, generator_batch_norm=batch_norm, dropout=0.3)

    def mnist(**options) -> MNISTDataModule:
        return MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, **options)

    _, population = fit_tiny(partial(model, seeds=SEEDS), mnist(population_seeds=SEEDS), **options)
    for member, seed in enumerate(SEEDS):
        _, alone = fit_tiny(model, mnist(shuffle_seed=data_order_seed(0, seed)), seed=seed, **options)
        assert_member_equals(population, member, alone)


@pytest.mark.parametrize("train_samples", [1, 3], ids=["elbo", "iwae_k3"])
def test_each_vae_member_equals_its_run_alone(synthetic_mnist, fit_tiny, train_samples):
    """Each member's dynamic binarisation and reparameterisation noise (an IWAE's k samples) from its own stream.
    Validation (the same fixed binarisation for every member, its one-sample noise from torch's global generator)
    is logged per member but not compared: a member's noise there is not its run's."""
    options = {"max_epochs": 7, "precision": "64-true", "callbacks": [EpochSeed()]}
    model = partial(VAE, hidden=(32,), latent_dim=4, train_samples=train_samples)

    def mnist(**options) -> MNISTDataModule:
        return MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=64, normalization="unit", **options)

    trainer, population = fit_tiny(partial(model, seeds=SEEDS), mnist(population_seeds=SEEDS), **options)
    for member, seed in enumerate(SEEDS):
        alone_trainer, alone = fit_tiny(model, mnist(shuffle_seed=data_order_seed(0, seed)), seed=seed, **options)
        assert_member_equals(population, member, alone)
        logged = trainer.callback_metrics
        torch.testing.assert_close(logged[f"train/elbo/member_{member}"], alone_trainer.callback_metrics["train/elbo"])
        assert f"val/elbo/member_{member}" in logged


def test_in_float32_a_member_stays_within_1e_5_of_its_run_alone_for_20_steps(fit_tiny):
    """Float32: the stacked products round differently from a single run's, so members drift from their runs,
    slowly at first (the known float-rounding chaos: docs/design.md); 20 critic steps stay within 1e-5."""
    options = {"max_steps": 24, "max_epochs": 3, "callbacks": [EpochSeed()]}  # 20 critic + 4 generator steps
    model = partial(WGAN, **SMALL_WGAN, lipschitz=SpectralNormalization())
    _, population = fit_tiny(partial(model, seeds=SEEDS), ring8(population_seeds=SEEDS), **options)
    for member, seed in enumerate(SEEDS):
        _, alone = fit_tiny(model, ring8(shuffle_seed=data_order_seed(0, seed)), seed=seed, **options)
        expected = alone.state_dict()
        for name, value in member_state(population.state_dict(), member).items():
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-5)


def test_two_populations_of_the_same_seeds_agree_bit_for_bit(fit_tiny):
    model = partial(WGAN, **SMALL_WGAN, lipschitz=GradientPenalty(), seeds=SEEDS)
    _, first = fit_tiny(model, ring8(population_seeds=SEEDS), max_epochs=2, callbacks=[EpochSeed()])
    _, second = fit_tiny(model, ring8(population_seeds=SEEDS), max_epochs=2, callbacks=[EpochSeed()], seed=99)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_population_logs_every_statistic_per_member_and_their_mean(fit_tiny):
    trainer, model = fit_tiny(partial(WGAN, **SMALL_WGAN, seeds=SEEDS), ring8(population_seeds=SEEDS), max_epochs=1)
    logged = set(trainer.callback_metrics)
    for name in model.statistic_names:
        assert f"train/{name}_epoch" in logged
        assert {f"train/{name}_epoch/member_{p}" for p in range(len(SEEDS))} <= logged
    members = torch.stack([trainer.callback_metrics[f"train/d_loss_epoch/member_{p}"] for p in range(len(SEEDS))])
    torch.testing.assert_close(trainer.callback_metrics["train/d_loss_epoch"], members.mean())


def test_what_a_population_cannot_stack_is_one_clear_line():
    with pytest.raises(ConfigError, match="cannot stack TorchSpectralNorm"):
        WGAN(**SMALL_WGAN, lipschitz=TorchSpectralNorm(), seeds=SEEDS)
    with pytest.raises(ConfigError, match="cannot stack a Embedding layer yet"):
        CGAN(**TINY_CGAN, seeds=SEEDS)
    with pytest.raises(ConfigError, match="model.seeds must be distinct seeds"):
        WGAN(**SMALL_WGAN, seeds=[1, 1])


@pytest.mark.parametrize("stop", ["epoch end", "mid-epoch"])
def test_an_exported_member_is_the_checkpoint_of_its_run_alone(fit_tiny, tmp_path, stop):
    """``python -m cli.export member CKPT P``: member p's checkpoint holds what the single run's own checkpoint
    at that step holds (weights, Adam's moments, loop state, the member's random stream as the global
    generator's), and resumed as a run of its seed and data order it ends where that one resumed ends."""
    seed, member = SEEDS[1], 1
    model = partial(WGAN, **SMALL_WGAN, lipschitz=GradientPenalty())
    options = {"precision": "64-true", "callbacks": [EpochSeed()]}
    first = {"max_epochs": 2} if stop == "epoch end" else {"max_epochs": 3, "max_steps": 30}  # 12 steps an epoch
    population_trainer, _ = fit_tiny(partial(model, seeds=SEEDS), ring8(population_seeds=SEEDS), **first, **options)
    population_trainer.save_checkpoint(tmp_path / "population.ckpt")
    export_main(["member", str(tmp_path / "population.ckpt"), str(member)])
    alone_trainer, _ = fit_tiny(model, ring8(shuffle_seed=data_order_seed(0, seed)), seed=seed, **first, **options)
    alone_trainer.save_checkpoint(tmp_path / "alone.ckpt")
    exported, own = (torch.load(tmp_path / name, weights_only=False) for name in ("population.member_1.ckpt", "alone.ckpt"))
    for name, value in own["state_dict"].items():
        torch.testing.assert_close(exported["state_dict"][name], value, rtol=1e-6, atol=1e-9)
    assert exported["loops"] == own["loops"] and exported["critic_updates"] == own["critic_updates"]
    assert torch.equal(exported["rng_states_per_rank"]["cpu"], own["rng_states_per_rank"]["cpu"])
    order = partial(ring8, shuffle_seed=data_order_seed(0, seed))
    resumed = [
        fit_tiny(model, order(), seed=seed, max_epochs=4, ckpt_path=tmp_path / name, **options)[1]
        for name in ("population.member_1.ckpt", "alone.ckpt")
    ]
    for (name, a), b in zip(resumed[1].state_dict().items(), resumed[0].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9, msg=lambda text, n=name: f"{n}: {text}")


def test_exporting_a_member_of_what_is_no_population_is_one_clear_line(fit_tiny, tmp_path, capsys):
    trainer, _ = fit_tiny(partial(WGAN, **SMALL_WGAN), ring8(), max_epochs=1)
    trainer.save_checkpoint(tmp_path / "single.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        export_main(["member", str(tmp_path / "single.ckpt"), "0"])
    assert exit_info.value.code == 2
    assert "is not a population's checkpoint (its model has no seeds)" in capsys.readouterr().err.splitlines()[-1]


class PoisonMember(L.Callback):
    """Fills member ``member``'s generator output layer with NaN at the start of batch ``batch`` of epoch 1."""

    def __init__(self, member: int, batch: int) -> None:
        self.member, self.batch = member, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == self.batch:
            with torch.no_grad():
                last_linear = [module for module in pl_module.generator.modules() if hasattr(module, "weight")][-1]
                last_linear.weight[self.member].fill_(math.nan)


def test_a_diverged_member_is_frozen_and_recorded_and_the_others_train_on_as_alone(fit_tiny):
    """Member 1's generator turns NaN at epoch 1, batch 3: from that batch on its losses are NaN; it is frozen
    (its critic keeps the weights it had), recorded at (1, 3), and the run goes on (the NaN guard reads the
    mean over the members alive); members 0 and 2 end as their runs alone."""
    options = {"max_epochs": 3, "precision": "64-true"}
    # Momentum (beta1 0.5; the WGAN's default is 0): a frozen member must not coast on Adam's first moment.
    model = partial(WGAN, **SMALL_WGAN, lipschitz=WeightClipping(), betas_d=(0.5, 0.9), betas_g=(0.5, 0.9))
    snapshots = {}

    class CriticAt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.current_epoch == 1 and batch_idx == 3:
                snapshots["critic"] = {k: v[1].clone() for k, v in pl_module.discriminator.state_dict().items()}

    callbacks = [EpochSeed(), CriticAt(), PoisonMember(1, 3), StopOnNonFiniteLoss(every_n_steps=1)]
    trainer, population = fit_tiny(partial(model, seeds=SEEDS), ring8(population_seeds=SEEDS), callbacks=callbacks, **options)
    assert population.diverged_members() == {1: (1, 3)}
    assert population.members_alive.tolist() == [True, False, True]
    for name, value in population.discriminator.state_dict().items():
        assert torch.equal(value[1], snapshots["critic"][name]), name
    assert torch.isfinite(trainer.callback_metrics["train/d_loss_epoch"])  # the mean over members 0 and 2
    assert not torch.isfinite(trainer.callback_metrics["train/d_loss_epoch/member_1"])
    for member in (0, 2):
        seed = SEEDS[member]
        _, alone = fit_tiny(model, ring8(shuffle_seed=data_order_seed(0, seed)), seed=seed, callbacks=[EpochSeed()], **options)
        assert_member_equals(population, member, alone)


def test_a_diverged_vae_member_is_frozen_and_the_others_train_on_as_alone(synthetic_mnist, fit_tiny):
    """The VAE's optimizer step is Lightning's: the member is frozen in ``on_before_optimizer_step``, and the
    loss Lightning differentiates leaves it out from the batch it diverged at."""
    options = {"max_epochs": 3, "precision": "64-true", "limit_val_batches": 0}
    model = partial(VAE, hidden=(32,), latent_dim=4)

    def mnist(**options) -> MNISTDataModule:
        return MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="unit", **options)

    class PoisonDecoder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.current_epoch == 1 and batch_idx == 2:
                with torch.no_grad():
                    pl_module.decoder[-1].weight[2].fill_(math.nan)

    callbacks = [EpochSeed(), PoisonDecoder(), StopOnNonFiniteLoss(every_n_steps=1)]
    _, population = fit_tiny(partial(model, seeds=SEEDS), mnist(population_seeds=SEEDS), callbacks=callbacks, **options)
    assert population.diverged_members() == {2: (1, 2)}
    for member in (0, 1):
        seed = SEEDS[member]
        _, alone = fit_tiny(model, mnist(shuffle_seed=data_order_seed(0, seed)), seed=seed, callbacks=[EpochSeed()], **options)
        assert_member_equals(population, member, alone)


@pytest.mark.slow
def test_train_py_trains_a_population_with_the_experiments_own_callbacks(tmp_path):
    """``--model.init_args.seeds`` through train.py: the seeds reach the data (linked), the members' metrics reach
    metrics.csv, and the experiment's callbacks (MixtureMetrics, CriticLandscape) write each member's files."""
    config = ["fit", "--config", str(ROOT / "configs/wgan_ring8_spectral_norm.yaml"), "--model.init_args.seeds", "[0, 1, 2]"]
    quick = ["--trainer.max_steps", "24", "--data.init_args.num_samples", "1280", "--trainer.enable_progress_bar", "false"]
    result = run_cli([*config, *quick], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = (tmp_path / "runs").rglob("metrics.csv")
    header = set(metrics.read_text().splitlines()[0].split(","))
    assert {"train/d_loss_epoch", "train/d_loss_epoch/member_0", "train/d_loss_epoch/member_2"} <= header
    assert {"eval/modes", "eval/modes/member_0", "eval/high_quality/member_2"} <= header
    run = metrics.parent
    final = json.loads((run / "final_metrics.json").read_text())
    assert len(final["members"]) == 3 and final["iteration"] == 20
    for member in range(3):
        member_final = json.loads((run / f"member_{member}" / "final_metrics.json").read_text())
        assert member_final["modes"] == final["members"][member]["modes"]
        assert (run / f"member_{member}" / "landscape.png").is_file()


def test_mixture_metrics_measure_each_member_as_its_run_alone_measures_itself(fit_tiny, tmp_path):
    """MixtureMetrics on a population: ``eval/<metric>/member_<p>`` and final_metrics.json's ``members`` are what
    the callback measures on member p's run alone; ``eval/<metric>`` is their mean."""
    options = {"max_epochs": 2, "precision": "64-true"}
    model = partial(WGAN, **SMALL_WGAN, lipschitz=SpectralNormalization())

    def metrics() -> MixtureMetrics:
        return MixtureMetrics(every_n_iterations=10, num_samples=300, redraw_seconds=0)

    logger = CSVLogger(tmp_path, name="population", version=0)
    callbacks = [EpochSeed(), metrics()]
    trainer, _ = fit_tiny(
        partial(model, seeds=SEEDS), ring8(population_seeds=SEEDS), callbacks=callbacks, logger=logger, **options
    )
    final = json.loads((tmp_path / "population" / "version_0" / "final_metrics.json").read_text())
    assert len(final["members"]) == len(SEEDS) and final["diverged"] == {}
    for member, seed in enumerate(SEEDS):
        alone_logger = CSVLogger(tmp_path, name=f"alone_{member}", version=0)
        alone_callbacks = [EpochSeed(), metrics()]
        order = ring8(shuffle_seed=data_order_seed(0, seed))
        alone_trainer, _ = fit_tiny(model, order, seed=seed, callbacks=alone_callbacks, logger=alone_logger, **options)
        for name in ("modes", "high_quality", "reverse_kl", "mmd2", "sliced_w1"):
            expected = float(alone_trainer.callback_metrics[f"eval/{name}"])
            assert float(trainer.callback_metrics[f"eval/{name}/member_{member}"]) == pytest.approx(expected, rel=1e-6, abs=1e-9)
            assert final["members"][member][name] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    for name in ("modes", "mmd2"):
        mean = sum(member[name] for member in final["members"]) / len(SEEDS)
        assert final[name] == pytest.approx(mean)
