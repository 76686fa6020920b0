"""One member of a population checkpoint (``model.seeds``) as the checkpoint of the single run it equals.

The single run of seed s_p: the model's hyperparameters without ``seeds``; every stacked tensor of the
weights and of the optimizers' state (Adam's moments) sliced at p; the data order of that seed
(``data.shuffle_seed = data_order_seed(shuffle_seed, s_p)``, ``population_seeds`` unset, where the
datamodule recorded its hyperparameters); and the member's random stream in the place of the single
run's global generator state (``callbacks.EpochSeed``'s), so that a resume mid-epoch continues it.
Loading it with the single-run config (``--ckpt_path``) resumes member p as a run of its own.
"""

from __future__ import annotations

from typing import Any

import torch

from core.errors import ConfigError
from datamodules.population import data_order_seed
from lightning_modules.components.population import PopulationMembers

#: ``callbacks.EpochSeed.CHECKPOINT_KEY``: the per-rank generator states of a single run.
SINGLE_RUN_RNG_KEY = "rng_states_per_rank"


def member_checkpoint(checkpoint: dict[str, Any], member: int, source: str) -> dict[str, Any]:
    """Member ``member`` of the population ``checkpoint`` (read from ``source``) as a single run's checkpoint."""
    hyperparameters = checkpoint.get("hyper_parameters", {})
    seeds = hyperparameters.get("seeds")
    if not seeds:
        raise ConfigError(f"{source} is not a population's checkpoint (its model has no seeds): there is no member to export.")
    if not 0 <= member < len(seeds):
        raise ConfigError(f"{source} holds members 0 to {len(seeds) - 1} (seeds {seeds}), not member {member}.")
    members = len(seeds)

    def sliced(value: Any) -> Any:
        return value[member].clone() if hasattr(value, "dim") and value.dim() > 0 and value.shape[0] == members else value

    single = dict(checkpoint)
    single["hyper_parameters"] = {**hyperparameters, "seeds": None}
    single["state_dict"] = {name: value[member].clone() for name, value in checkpoint["state_dict"].items()}
    single["optimizer_states"] = [
        {
            **state,
            "state": {index: {key: sliced(value) for key, value in entry.items()} for index, entry in state["state"].items()},
        }
        for state in checkpoint.get("optimizer_states", [])
    ]
    data = checkpoint.get("datamodule_hyper_parameters")
    if data is not None and data.get("population_seeds") is not None:
        single["datamodule_hyper_parameters"] = {
            **data,
            "population_seeds": None,
            "shuffle_seed": data_order_seed(data.get("shuffle_seed", 0), seeds[member]),
        }
    single.pop(PopulationMembers.DIVERGED_KEY, None)
    streams = single.pop(PopulationMembers.CHECKPOINT_KEY, None)
    if streams is not None:  # a checkpoint written mid-epoch: the member's stream is its run's global generator
        state = streams["states"][member].unsqueeze(0)
        cpu = state if streams["device"] == "cpu" else torch.get_rng_state().unsqueeze(0)  # unused on a GPU
        single[SINGLE_RUN_RNG_KEY] = {"cpu": cpu} | ({"cuda": state} if streams["device"] == "cuda" else {})
    return single
