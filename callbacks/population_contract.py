"""The callbacks a population (``model.init_args.seeds``) can train with. Those that measure or draw the
model's samples, codes or critic (grids, landscapes, sample quality, latent figures) read one
network, not P stacked ones; until they measure each member (issue #33), a population refuses them before
training, in one line, instead of failing on a shape deep inside the first measurement."""

from __future__ import annotations

import lightning as L

from callbacks.autoencoder_figures import Interpolation, PriorSamples
from callbacks.classification import TestConfusion
from callbacks.latent_space import LatentManifold
from callbacks.mixture import CriticLandscape
from callbacks.periodic import PeriodicMeasurement
from callbacks.sample_grid import EpochFigure
from core.errors import ConfigError

#: Callbacks that read the model's outputs: one run's, not yet a population's members'.
ONE_NETWORK_READERS = (
    EpochFigure,
    CriticLandscape,
    PeriodicMeasurement,
    LatentManifold,
    PriorSamples,
    Interpolation,
    TestConfusion,
)


class RequireCallbacksAPopulationSupports(L.Callback):
    """Refuse a population's fit with a callback that reads one network's outputs (``ONE_NETWORK_READERS``)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "members", None) is None:
            return
        readers = sorted({type(callback).__name__ for callback in trainer.callbacks if isinstance(callback, ONE_NETWORK_READERS)})
        if readers:
            raise ConfigError(
                f"model.init_args.seeds trains a population, but trainer.callbacks has {', '.join(readers)}, which "
                "measure one network and not yet each member (issue #33): give the population a callbacks file "
                "without them (e.g. --trainer.callbacks configs/callbacks/population.yaml, or wgan_population.yaml with the "
                "mixture metrics), or train the seeds one by one."
            )
