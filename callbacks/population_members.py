"""A population's members measured one by one with the callbacks of a single run.

The callbacks that read the model's outputs (grids, landscapes, sample quality, latent figures, test metrics) read
one network. For a population (``model.init_args.seeds``) each such callback is given P copies of itself,
:class:`EachMember`, copy p seeing member p's view (``PopulationMembers.member_view``: the single run's module,
its weights the member's) and writing through :func:`callbacks.run_outputs.member_outputs`: its files under
``member_<p>/`` of the run folder (``member_<p>/samples/epoch_010.png``, ``member_<p>/final_metrics.json``), its
scalars as ``<name>/member_<p>`` and their mean over the members alive as ``<name>``. So a member's outputs are
those of its run alone, from the callback code of a single run; ``train.py`` wraps them (:func:`measure_each_member`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partialmethod
from typing import Any

import lightning as L

from callbacks.autoencoder_figures import Interpolation, PriorSamples
from callbacks.latent_space import LatentManifold
from callbacks.mixture import CriticLandscape
from callbacks.periodic import PeriodicMeasurement
from callbacks.run_outputs import log_scalars, member_outputs
from callbacks.sample_grid import EpochFigure
from core.errors import ConfigError

#: Callbacks that read one network's outputs: a population runs them once per member.
ONE_NETWORK_READERS = (EpochFigure, CriticLandscape, PeriodicMeasurement, LatentManifold, PriorSamples, Interpolation)
#: The hooks of ``L.Callback`` that receive ``(trainer, pl_module, ...)``.
HOOKS = tuple(name for name in vars(L.Callback) if name.startswith("on_") or name in ("setup", "teardown"))


class EachMember(L.Callback):
    """``callback`` once per member of a population: copy p gets member p's view and writes member p's outputs.
    Only the hooks ``callback`` defines are passed on (a training batch calls several)."""

    def __init__(self, callback: L.Callback, members: int) -> None:
        self.callback = callback
        self.copies = [copy.deepcopy(callback) for _ in range(members)]
        self.hooks = {name for name in HOOKS if getattr(type(callback), name) is not getattr(L.Callback, name)}

    @property
    def state_key(self) -> str:
        return f"EachMember[{self.callback.state_key}]"

    def each_member(self, hook: str, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        if hook not in self.hooks:
            return
        sent: dict[str, list[float]] = {}
        for member, callback in enumerate(self.copies):
            with member_outputs(member) as scalars:
                getattr(callback, hook)(trainer, pl_module.member_view(member), *args, **kwargs)
            for name, value in scalars.items():
                sent.setdefault(name, []).append(value)
        if sent:  # the members' mean, where tables and curves of single runs look
            alive = pl_module.members_alive.tolist()
            log_scalars(trainer, {name: mean_of_alive(values, alive) for name, values in sent.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"members": [callback.state_dict() for callback in self.copies]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for callback, state in zip(self.copies, state_dict["members"]):
            callback.load_state_dict(state)

    def __repr__(self) -> str:
        return f"EachMember({type(self.callback).__name__}, {len(self.copies)} members)"


for _hook in HOOKS:
    setattr(EachMember, _hook, partialmethod(EachMember.each_member, _hook))


def mean_of_alive(values: Sequence[float], alive: Sequence[bool]) -> float:
    """The mean of the values of the members alive (of all, once none is)."""
    kept = [float(value) for value, on in zip(values, alive) if on] or [float(value) for value in values]
    return sum(kept) / len(kept)


def measure_each_member(callbacks: list[L.Callback], model: L.LightningModule) -> list[L.Callback]:
    """``callbacks`` with every one-network reader wrapped in :class:`EachMember`, for a population; as they are otherwise."""
    members = getattr(model, "members", None)
    if members is None:
        return callbacks
    return [EachMember(callback, members) if isinstance(callback, ONE_NETWORK_READERS) else callback for callback in callbacks]


class RequireCallbacksAPopulationSupports(L.Callback):
    """Refuse a population's fit with a one-network reader not wrapped per member (a Trainer built outside
    ``train.py``), in one line, instead of failing on a shape deep inside its first measurement."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "members", None) is None:
            return
        readers = sorted({type(callback).__name__ for callback in trainer.callbacks if isinstance(callback, ONE_NETWORK_READERS)})
        if readers:
            raise ConfigError(
                f"model.init_args.seeds trains a population, but trainer.callbacks has {', '.join(readers)}, which read "
                "one network: pass the callbacks through callbacks.population_members.measure_each_member(callbacks, model) "
                "(train.py does), which runs each once per member."
            )
