"""The training batches a datamodule is set to hand out must be ones its model takes. The data never
reads the model (it may not depend on it), so the two are held to each other here, before training,
where both are known: a mismatch is then one line naming the setting to change, not a shape error
deep inside a training step."""

from __future__ import annotations

from typing import Any

import lightning as L

from core.errors import DataConfigError


def data_setting(datamodule: L.LightningDataModule | None, name: str, default: Any) -> Any:
    """A datamodule's setting ``name``, as an attribute (the 2-D mixtures) or a saved hyperparameter
    (the image datamodules); ``default`` for a datamodule without it, or a fit without a datamodule."""
    if datamodule is None:
        return default
    return getattr(datamodule, name, datamodule.hparams.get(name, default))


class RequireBatchesTheModelAccepts(L.Callback):
    """Refuse a fit whose training batches the model cannot take:

    - groups of minibatches (``data.minibatches_per_step > 1``) for a model that does not declare
      ``accepts_minibatch_groups``;
    - batches of a population of runs (``data.population_seeds``) other than the model's own
      ``seeds`` (``lightning_modules.OptimizerStudy``), or for a model without them; ``train.py``
      links the two, so this guards a Trainer built without the CLI.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        minibatches_per_step = data_setting(datamodule, "minibatches_per_step", 1)
        if minibatches_per_step > 1 and not getattr(pl_module, "accepts_minibatch_groups", False):
            raise DataConfigError(
                f"data.minibatches_per_step={minibatches_per_step} hands several minibatches to one training step, but "
                f"{type(pl_module).__name__} takes one batch per step: set data.minibatches_per_step to 1."
            )
        model_seeds, data_seeds = pl_module.hparams.get("seeds"), data_setting(datamodule, "population_seeds", None)
        model_seeds, data_seeds = (None if seeds is None else list(seeds) for seeds in (model_seeds, data_seeds))
        if model_seeds is not None and data_seeds != model_seeds:
            raise DataConfigError(
                f"{type(pl_module).__name__} trains a population of runs, one per seed of model.seeds={model_seeds}, but "
                f"data.population_seeds={data_seeds}: give data.population_seeds the model's seeds (train.py links them)."
            )
        if model_seeds is None and data_seeds is not None:
            raise DataConfigError(
                f"data.population_seeds={data_seeds} stacks the training batches of a population of runs, but "
                f"{type(pl_module).__name__} trains one run: leave data.population_seeds out."
            )
