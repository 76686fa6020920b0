"""A population's members measured by the callbacks of a single run (``callbacks.population_members``): each
member's grids, landscapes, sample quality and test metrics are what the same callback gives its run alone,
written under ``member_<p>/`` and logged as ``<name>/member_<p>`` beside the members' mean."""

import json
from functools import partial

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from callbacks import CriticLandscape, EpochSeed, MixtureMetrics, PriorSamples, SampleGrid, SampleQuality, TestSplitMetrics
from callbacks.population_members import EachMember, measure_each_member
from core.errors import ConfigError
from datamodules import MNISTDataModule, Ring8DataModule
from datamodules.population import data_order_seed
from lightning_modules import GAN, VAE, WGAN
from lightning_modules.components.lipschitz import SpectralNormalization
from tests.conftest import ROOT, SMALL_WGAN, TINY_GAN

SEEDS = [3, 7]
MNIST_CLASSIFIER = ROOT / "pretrained" / "lenet_mnist.pt"


def fit_population_and_alone(fit_tiny, tmp_path, model, data, callbacks, **options):
    """The population of ``SEEDS`` and each seed's run alone, each with fresh ``callbacks()``: the population's
    trainer and run folder, and each run alone's."""
    population = model(seeds=SEEDS)
    wrapped = measure_each_member(callbacks(), population)
    assert any(isinstance(callback, EachMember) for callback in wrapped)
    logger = CSVLogger(tmp_path, name="population", version=0)
    trainer, _ = fit_tiny(lambda: population, data(population_seeds=SEEDS), callbacks=wrapped, logger=logger, **options)
    alone = []
    for member, seed in enumerate(SEEDS):
        logger = CSVLogger(tmp_path, name=f"alone_{member}", version=0)
        order = data(shuffle_seed=data_order_seed(0, seed))
        alone_trainer, _ = fit_tiny(model, order, seed=seed, callbacks=callbacks(), logger=logger, **options)
        alone.append((alone_trainer, tmp_path / f"alone_{member}" / "version_0"))
    return (trainer, tmp_path / "population" / "version_0"), alone


def copies_of(trainer, kind) -> list:
    (wrapper,) = [
        callback for callback in trainer.callbacks if isinstance(callback, EachMember) and isinstance(callback.callback, kind)
    ]
    return wrapper.copies


def one_of(trainer, kind):
    return next(callback for callback in trainer.callbacks if isinstance(callback, kind))


def header_of(run) -> set[str]:
    return set((run / "metrics.csv").read_text().splitlines()[0].split(","))


def test_each_member_draws_its_landscape_as_its_run_alone_does(fit_tiny, tmp_path):
    """CriticLandscape per member: member p's critic contour and generated points are its run alone's (float64),
    in member_<p>/landscape.png; MixtureMetrics writes member_<p>/final_metrics.json beside them."""

    def callbacks():
        landscape = CriticLandscape(iterations=(5,), num_samples=200, resolution=16)
        return [EpochSeed(), MixtureMetrics(every_n_iterations=10, num_samples=200), landscape]

    def ring8(**data):
        return Ring8DataModule(num_samples=640, batch_size=64, **data)

    model = partial(WGAN, **SMALL_WGAN, lipschitz=SpectralNormalization())
    (trainer, run), alone = fit_population_and_alone(
        fit_tiny, tmp_path, model, ring8, callbacks, max_epochs=2, precision="64-true"
    )
    for member, (alone_trainer, alone_run) in enumerate(alone):
        folder = run / f"member_{member}"
        assert (folder / "landscape.png").is_file() and (folder / "landscape" / "iteration_0000005.png").is_file()
        snapshots, expected = (
            copies_of(trainer, CriticLandscape)[member].snapshots,
            one_of(alone_trainer, CriticLandscape).snapshots,
        )
        assert [snapshot["iteration"] for snapshot in snapshots] == [snapshot["iteration"] for snapshot in expected] == [5, 20]
        for snapshot, alone_snapshot in zip(snapshots, expected):
            torch.testing.assert_close(snapshot["critic"], alone_snapshot["critic"], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(snapshot["generated"], alone_snapshot["generated"], rtol=1e-5, atol=1e-6)
        final = json.loads((folder / "final_metrics.json").read_text())
        alone_final = json.loads((alone_run / "final_metrics.json").read_text())
        for name in ("modes", "high_quality", "mmd2", "iteration"):
            assert final[name] == pytest.approx(alone_final[name], rel=1e-6, abs=1e-9)
    assert not (run / "landscape.png").exists()  # nothing of one network in the population's own folder


def test_each_member_gets_its_grids_and_sample_quality_as_its_run_alone_does(real_mnist, fit_tiny, tmp_path):
    """SampleGrid and SampleQuality per member: member_<p>/samples/*.png, member_<p>/final_metrics.json with the
    numbers of its run alone, ``quality/<name>/member_<p>`` and the members' mean ``quality/<name>`` in metrics.csv."""

    def callbacks():
        quality = SampleQuality(str(MNIST_CLASSIFIER), every_n_epochs=1, num_samples=200, num_real=400, kid_subset_size=100)
        return [EpochSeed(), SampleGrid(epochs=(1,), num_samples=16, nrow=4), quality]

    def mnist(**data):
        return MNISTDataModule(data_dir=str(real_mnist), batch_size=32, val_size=0, **data)

    model = partial(GAN, **TINY_GAN)
    options = {"max_epochs": 2, "limit_train_batches": 4}  # float32: the classifier and the images are float32
    (trainer, run), alone = fit_population_and_alone(fit_tiny, tmp_path, model, mnist, callbacks, **options)
    fids = []
    for member, (_, alone_run) in enumerate(alone):
        folder = run / f"member_{member}"
        assert sorted(path.name for path in (folder / "samples").glob("*.png")) == ["epoch_001.png", "epoch_002.png"]
        final, alone_final = (json.loads((path / "final_metrics.json").read_text()) for path in (folder, alone_run))
        for name in ("fid", "kid", "inception_score", "precision", "recall", "classes_covered", "epoch"):
            assert final[name] == pytest.approx(alone_final[name], rel=1e-4, abs=1e-6), name
        fids.append(final["fid"])
    assert fids[0] != pytest.approx(fids[1])  # two members, two different generators
    header = set((run / "metrics.csv").read_text().splitlines()[0].split(","))
    assert {"quality/fid", "quality/fid/member_0", "quality/fid/member_1", "quality/recall/member_1"} <= header
    assert float(trainer.callback_metrics["quality/fid"]) == pytest.approx(sum(fids) / 2)
    assert not (run / "samples").exists() and not (run / "final_metrics.json").exists()


def test_each_vae_member_gets_its_test_bound_and_prior_samples(synthetic_mnist, fit_tiny, tmp_path):
    """TestSplitMetrics and PriorSamples per member: member p's test ELBO is its run alone's."""

    def callbacks():
        return [EpochSeed(), TestSplitMetrics(every_n_epochs=1), PriorSamples(num_samples=16, nrow=4)]

    def mnist(**data):
        return MNISTDataModule(data_dir=str(synthetic_mnist), batch_size=32, val_size=0, normalization="unit", **data)

    model = partial(VAE, hidden=(32,), latent_dim=4, test_samples=5)
    (_, run), alone = fit_population_and_alone(fit_tiny, tmp_path, model, mnist, callbacks, max_epochs=1, limit_train_batches=4)
    for member, (_, alone_run) in enumerate(alone):
        folder = run / f"member_{member}"
        assert (folder / "samples" / "prior.png").is_file()
        final, alone_final = (json.loads((path / "final_metrics.json").read_text()) for path in (folder, alone_run))
        assert final["test_elbo"] == pytest.approx(alone_final["test_elbo"], rel=1e-6)


def test_a_one_network_reader_left_unwrapped_is_one_clear_line(fit_tiny):
    from callbacks.population_members import RequireCallbacksAPopulationSupports

    with pytest.raises(
        ConfigError, match=r"trainer.callbacks has CriticLandscape, which read one network: .*measure_each_member"
    ):
        fit_tiny(
            partial(WGAN, **SMALL_WGAN, seeds=SEEDS),
            Ring8DataModule(num_samples=640, batch_size=64, population_seeds=SEEDS),
            callbacks=[RequireCallbacksAPopulationSupports(), CriticLandscape()],
        )


def test_a_resumed_population_ends_as_the_uninterrupted_one_with_each_members_snapshots(fit_tiny, tmp_path):
    """A population checkpointed after 2 epochs and resumed for 2 more ends with the uninterrupted population's
    weights and each member's landscape snapshots, the earlier ones restored from the checkpoint. Within 1e-6: in
    float64 a single run resumed this way ends 3e-8 from its uninterrupted self too (measured 2026-12-02, both;
    not explained yet)."""
    model = partial(WGAN, **SMALL_WGAN, lipschitz=SpectralNormalization(), seeds=SEEDS)

    def ring8():
        return Ring8DataModule(num_samples=640, batch_size=64, population_seeds=SEEDS)

    def callbacks(population):
        return measure_each_member([EpochSeed(), CriticLandscape(iterations=(5, 25), num_samples=100, resolution=8)], population)

    def fit(max_epochs, ckpt_path=None, name="run", checkpoints=()):
        population = model()
        logger = CSVLogger(tmp_path, name=name, version=0)
        options = {"precision": "64-true", "logger": logger, "max_epochs": max_epochs, "ckpt_path": ckpt_path}
        every = [*callbacks(population), *checkpoints]
        return fit_tiny(lambda: population, ring8(), callbacks=every, enable_checkpointing=bool(checkpoints), **options)

    whole_trainer, whole = fit(4, name="whole")
    fit(2, name="first", checkpoints=[ModelCheckpoint(tmp_path / "checkpoints", save_last=True)])  # as train.py checkpoints
    resumed_trainer, resumed = fit(4, ckpt_path=tmp_path / "checkpoints" / "last.ckpt", name="resumed")
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(
            resumed.state_dict()[name], value, rtol=1e-6, atol=1e-7, msg=lambda text, n=name: f"{n}: {text}"
        )
    for member in range(len(SEEDS)):
        ours, theirs = (copies_of(trainer, CriticLandscape)[member].snapshots for trainer in (resumed_trainer, whole_trainer))
        assert [s["iteration"] for s in ours] == [s["iteration"] for s in theirs] == [5, 25, 40]
        torch.testing.assert_close(ours[-1]["critic"], theirs[-1]["critic"], rtol=1e-5, atol=1e-6)
