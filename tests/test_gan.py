"""The GAN module and the shared adversarial step, trained in-process on small synthetic MNIST files."""

from functools import partial

import lightning as L
import pytest
import torch

from callbacks import EpochSeed, StopOnNonFiniteLoss
from core.errors import ConfigError, NonFiniteLossError
from datamodules import MNISTDataModule
from lightning_modules import GAN
from lightning_modules.components.losses import NonSaturatingGANLoss, SaturatingGANLoss
from lightning_modules.components.mlp import Dropout
from lightning_modules.components.step_logging import gradient_norm
from tests.conftest import TINY_GAN
from tests.probes import OptimizerLog

TINY = partial(GAN, **TINY_GAN)


def mnist(data_root) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(data_root), batch_size=32, val_size=0)


@pytest.mark.parametrize("n_critic", [1, 3, 5])
def test_exactly_k_discriminator_steps_per_generator_step(synthetic_mnist, fit_tiny, n_critic):
    log = OptimizerLog()
    trainer, model = fit_tiny(
        partial(TINY, n_critic=n_critic), mnist(synthetic_mnist), max_epochs=2, limit_val_batches=0, callbacks=[EpochSeed(), log]
    )
    batches = 2 * (256 // 32)  # two epochs of 8 batches: one D step each
    expected = "".join("D" + ("G" if (i + 1) % n_critic == 0 else "") for i in range(batches))
    assert "".join(log.steps) == expected
    assert trainer.global_step == len(expected)  # Lightning counts every optimizer step
    assert model.critic_updates == batches
    logged = {name.removesuffix("_epoch") for name in trainer.logged_metrics if name.endswith("_epoch")}
    assert logged == model.logged_metric_names  # what LearningCurves checks its panels against
    adam_steps = [int(next(iter(opt.state.values()))["step"]) for opt in trainer.optimizers]
    assert adam_steps == [batches // n_critic, batches]


def test_same_seed_gives_identical_losses_and_another_seed_does_not(synthetic_mnist, fit_tiny):
    log_a, log_b, log_c = OptimizerLog(), OptimizerLog(), OptimizerLog()
    _, model_a = fit_tiny(TINY, mnist(synthetic_mnist), seed=7, max_epochs=2, limit_val_batches=0, callbacks=[EpochSeed(), log_a])
    _, model_b = fit_tiny(TINY, mnist(synthetic_mnist), seed=7, max_epochs=2, limit_val_batches=0, callbacks=[EpochSeed(), log_b])
    fit_tiny(TINY, mnist(synthetic_mnist), seed=8, max_epochs=2, limit_val_batches=0, callbacks=[EpochSeed(), log_c])
    assert log_a.losses == log_b.losses
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values()))
    assert log_a.losses != log_c.losses


def test_networks_map_noise_to_images_and_images_to_logits():
    model = GAN()
    z = model.sample_latent(5)
    images = model.generate(z, None)
    assert z.shape == (5, 100) and images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert model.score(images, None).shape == (5,)


def test_saturating_loss_starves_the_generator_where_non_saturating_does_not():
    """The mechanism behind experiment (b), on the real networks: a confident D kills G's gradient."""
    norms = {}
    for loss in (SaturatingGANLoss(), NonSaturatingGANLoss()):
        torch.manual_seed(0)
        model = GAN(loss=loss)
        with torch.no_grad():  # a discriminator that rejects everything: D(x) = sigmoid(-12)
            model.discriminator.net[-1].bias.fill_(-12.0)
        model.adversarial_loss.generator(model.score(model.generate(model.sample_latent(64), None), None)).backward()
        norms[type(loss).__name__] = torch.stack([p.grad.norm() for p in model.generator.parameters()]).norm().item()
    assert norms["SaturatingGANLoss"] < 1e-4 * norms["NonSaturatingGANLoss"]


@pytest.mark.parametrize("n_critic", [0, -2, 1.5, True])
def test_invalid_n_critic_is_a_clear_error(n_critic):
    with pytest.raises(ConfigError, match=r"model.n_critic .* must be an integer >= 1"):
        GAN(n_critic=n_critic)


def test_a_checkpoint_of_a_model_built_in_python_rebuilds_its_loss_object(synthetic_mnist, fit_tiny, tmp_path):
    trainer, _ = fit_tiny(partial(TINY, loss=SaturatingGANLoss()), mnist(synthetic_mnist), limit_val_batches=0)
    trainer.save_checkpoint(tmp_path / "gan.ckpt")
    restored = GAN.load_from_checkpoint(tmp_path / "gan.ckpt")  # torch.load with weights_only=True
    assert isinstance(restored.adversarial_loss, SaturatingGANLoss)


def test_generator_range_must_match_data_normalization(synthetic_mnist, make_trainer):
    with pytest.raises(ConfigError, match="set model.output_activation='sigmoid'"):
        make_trainer(max_steps=1).fit(
            GAN(**TINY_GAN), MNISTDataModule(data_dir=str(synthetic_mnist), normalization="unit", val_size=0)
        )


def test_non_finite_loss_stops_training_before_any_checkpoint(synthetic_mnist, make_trainer, tmp_path):
    class PoisonedGAN(GAN):
        def on_train_start(self):
            with torch.no_grad():
                self.generator.net[-2].weight.fill_(float("nan"))

    L.seed_everything(0, verbose=False)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1)
    trainer = make_trainer(max_epochs=1, enable_checkpointing=True, callbacks=[StopOnNonFiniteLoss(), checkpoint])
    with pytest.raises(
        NonFiniteLossError,
        match=r"Non-finite loss at epoch 1, batch 0, global step 2 \(rank 0: d_loss=nan.*Lower the learning rates",
    ):
        trainer.fit(PoisonedGAN(**TINY_GAN), MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_cpu_dropout_keeps_1_minus_p_of_the_units_scaled_and_passes_gradient_only_through_them():
    torch.manual_seed(0)
    dropout = Dropout(0.3)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 2e-3  # 1e6 units: the standard error is 5e-4
    assert torch.allclose(y[kept], torch.tensor(1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx = mask / (1 - p)
    assert not torch.equal(dropout(x), dropout(x))  # a fresh mask per call
    assert torch.equal(dropout.eval()(x), x)


@pytest.mark.parametrize("one_vector_max", [0, 2**18], ids=["tensor by tensor", "as one vector"])
def test_gradient_norm_is_the_l2_norm_of_the_gradients_its_optimizer_steps(one_vector_max, monkeypatch):
    from lightning_modules.components import step_logging

    monkeypatch.setattr(step_logging, "ONE_VECTOR_MAX_ELEMENTS", one_vector_max)
    model = GAN(**TINY_GAN)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    _, opt_d = model.configure_optimizers()
    expected = torch.cat([p.grad.double().flatten() for p in model.discriminator.parameters()]).norm()
    assert torch.allclose(gradient_norm(opt_d).double(), expected, rtol=1e-6)


def test_bf16_mixed_precision_trains_with_fp32_weights(synthetic_mnist, make_trainer, tmp_path):
    trainer = make_trainer(max_epochs=1, limit_val_batches=0, precision="bf16-mixed")
    model = GAN(**TINY_GAN)
    trainer.fit(model, MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0))
    assert trainer.global_step == 2 * (256 // 32)
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())
    assert all(torch.isfinite(trainer.callback_metrics[f"train/{name}_epoch"]) for name in ("d_loss", "g_loss"))


class EpochMeansProbe(L.Callback):
    """Every step's statistics as the module handed them over (``outputs`` carries only the losses), and
    each epoch's logged means as a callback reads them in ``on_train_epoch_end``."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self.epochs: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({f"train/{k}": float(v) for k, v in pl_module.last_step_statistics.items()})

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = {k.removesuffix("_epoch"): float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
        self.epochs.append(epoch)
        self.steps.append({"epoch end": True})


@pytest.mark.parametrize("stop", ["epochs", "max_steps", "should_stop"])
def test_epoch_means_are_the_means_of_every_update_of_the_epoch_however_it_ends(synthetic_mnist, fit_tiny, stop, monkeypatch):
    """The statistics are summed on the device and handed to the epoch means only where the epoch may end:
    the means a callback reads at epoch end are those of every update since the epoch began, with G's
    statistics counted over G's updates only (n_critic = 2), whether the epoch ran out of batches, reached
    max_steps or was stopped by a callback."""
    from lightning_modules.components import step_logging

    original = step_logging.StepStatistics.log_stats

    def keep_last(self, updates, batch_size):
        means = original(self, updates, batch_size)
        self.last_step_statistics = dict(means)
        return means

    monkeypatch.setattr(step_logging.StepStatistics, "log_stats", keep_last)

    class StopAtBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            trainer.should_stop = trainer.current_epoch == 1 and batch_idx == 4

    probe = EpochMeansProbe()
    options = {
        "epochs": {"max_epochs": 2},
        # 8 batches = 12 optimizer steps an epoch; 18 = one epoch and 4 batches (D, D+G, D, D+G) of the second.
        "max_steps": {"max_epochs": 3, "max_steps": 18},
        "should_stop": {"max_epochs": 3, "callbacks": [EpochSeed(), StopAtBatch(), probe]},
    }[stop]
    options.setdefault("callbacks", [EpochSeed(), probe])
    fit_tiny(partial(TINY, n_critic=2), mnist(synthetic_mnist), limit_val_batches=0, **options)
    epochs, steps = [], []
    for step in probe.steps:
        if "epoch end" in step:
            epochs.append(steps)
            steps = []
        else:
            steps.append(step)
    assert len(epochs) == len(probe.epochs) == 2
    assert len(epochs[1]) == {"epochs": 8, "max_steps": 4, "should_stop": 5}[stop]
    for updates, logged in zip(epochs, probe.epochs):
        assert set(logged) == {f"train/{n}" for n in ("d_loss", "d_grad_norm", "d_real", "d_fake", "g_loss", "g_grad_norm")}
        for name, mean in logged.items():
            values = [step[name] for step in updates if name in step]
            assert len(values) == (len(updates) if name.startswith("train/d_") else len(updates) // 2)
            assert mean == pytest.approx(sum(values) / len(values), rel=1e-6), name
