"""A population: P runs of one model trained at once, as one network with a leading member dimension.

Member p is the run a single process would train with seed ``s_p``. Its networks are built right
after ``torch.manual_seed(s_p)``, exactly as the single run builds them (so: the same initial
weights, the same power-iteration vectors), then the P networks are stacked layer by layer
(:func:`stack_members`): a linear layer becomes a :class:`StackedLinear` with weights ``(P, out,
in)`` and ``baddbmm`` for its product, element-wise layers stay as they are, and every tensor the
network passes on gains the member dimension in front, ``(P, m, ...)``. Stacked parameters keep
the single run's names, so member p's state is a slice of every entry (:func:`member_state`).

Why stacked layers rather than ``torch.func.vmap`` over stacked state (the optimizer study's way):
dropout masks and noise must come from each member's own random stream to equal its single run,
and a stacked layer draws them member by member from :class:`MemberRandomness`, where ``vmap``
would draw one batch of numbers for all; the products are the same ``bmm`` either way.

Randomness: each member owns a ``torch.Generator``, reseeded at every epoch start with the seed
genlab's ``EpochSeed`` gives a single run of seed ``s_p`` (:func:`core.seeding.epoch_seed`), and
draws its noise (and, in a critic step, its gradient-penalty interpolation weights) in the order its
single run draws them from torch's global generator: the same numbers.

The optimizers see stacked tensors; Adam is element-wise, so member p's update is its update alone.
Losses are per member and summed before the backward pass, so member p's gradient sees only its loss.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from core.errors import ConfigError
from core.seeding import epoch_seed

#: From this many weights per member on, :class:`StackedLinear` multiplies weights first (measured, 2-core Xeon:
#: 128 x 128 layers are 5 % faster the other way, 784 x 1024 ones 1.8x slower).
WEIGHTS_FIRST_FROM = 2**16


class StackedLinear(nn.Module):
    """P linear layers as one: ``(P, m, in) -> (P, m, out)``, member p with member p's weights."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = len(layers), layers[0].in_features, layers[0].out_features
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = None if layers[0].bias is None else nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        for name, _ in layers[0].named_buffers(recurse=False):  # e.g. spectral normalisation's u
            self.register_buffer(name, torch.stack([getattr(layer, name) for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias
        if self.in_features * self.out_features < WEIGHTS_FIRST_FROM:
            return torch.bmm(x, self.weight.mT) if bias is None else torch.baddbmm(bias.unsqueeze(1), x, self.weight.mT)
        # (W x^T)^T: the weights as stored, the activations transposed. For large layers a CPU's batched GEMM
        # multiplies by a transposed right operand up to ~1.8x slower (docs/benchmarks.md); the transposed
        # result then feeds the next layer's x^T as a contiguous tensor.
        product = torch.bmm(self.weight, x.mT) if bias is None else torch.baddbmm(bias.unsqueeze(-1), self.weight, x.mT)
        return product.mT

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class StackedDropout(nn.Module):
    """Dropout of ``(P, m, ...)`` with member p's mask from member p's stream: on a CPU the mask its single
    run draws (genlab's :class:`~lightning_modules.components.mlp.Dropout`); on a GPU a Bernoulli mask
    from the member's stream (the single run's fused ``F.dropout`` kernel takes no generator)."""

    def __init__(self, layer: nn.Dropout, randomness: MemberRandomness) -> None:
        super().__init__()
        self.p, self.layer, self.randomness = layer.p, layer, randomness

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type == "cpu" and hasattr(self.layer, "scaled_mask"):
            masks = [self.layer.scaled_mask(x[0], rng) for rng in self.randomness.generators]
        else:
            keep = 1.0 - self.p
            masks = [torch.empty_like(x[0]).bernoulli_(keep, generator=rng).div_(keep) for rng in self.randomness.generators]
        return x * torch.stack(masks)


class StackedBatchNorm1d(nn.Module):
    """P ``BatchNorm1d`` layers over ``(P, m, features)``: each member's statistics over its own m samples."""

    def __init__(self, layers: Sequence[nn.BatchNorm1d]) -> None:
        super().__init__()
        first = layers[0]
        self.eps, self.momentum, self.members = first.eps, first.momentum, len(layers)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(layer, name) for layer in layers]))

    def forward(self, x: Tensor) -> Tensor:
        members, samples, features = x.shape
        if self.training:
            self.num_batches_tracked.add_(1)
        # Members side by side as channels: one batch norm, each channel normalised over its member's samples.
        side_by_side = x.transpose(0, 1).reshape(samples, members * features)
        out = nn.functional.batch_norm(
            side_by_side,
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.weight.view(-1),
            self.bias.view(-1),
            self.training,
            self.momentum,
            self.eps,
        )
        return out.view(samples, members, features).transpose(0, 1)


#: Layers that act on each sample alone whatever the leading dimensions (a Flatten from the sample's own
#: dimensions on, as genlab's networks build it): shared by all members as they are.
ELEMENT_WISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Flatten)


def stack_members(networks: Sequence[nn.Module], randomness: MemberRandomness | None = None) -> nn.Module:
    """One network that computes all of ``networks`` (of one architecture) at once, member p as
    ``networks[p]``, its dropout masks from ``randomness``; a layer it cannot stack is one clear error."""

    def stacked(layers: Sequence[nn.Module]) -> nn.Module:
        first = layers[0]
        if isinstance(first, nn.Linear):
            return StackedLinear(layers)
        if isinstance(first, nn.BatchNorm1d) and first.affine and first.track_running_stats and first.momentum is not None:
            return StackedBatchNorm1d(layers)
        if isinstance(first, nn.Dropout) and randomness is not None:
            return StackedDropout(first, randomness)
        if isinstance(first, ELEMENT_WISE) or (isinstance(first, nn.Dropout) and first.p == 0):
            return copy.deepcopy(first)
        own_state = [*first.named_parameters(recurse=False), *first.named_buffers(recurse=False)]
        if list(first.children()) and not own_state:  # a container: its children stacked, its forward as it is
            container = copy.deepcopy(first)
            for name in first._modules:
                container._modules[name] = stacked([layer._modules[name] for layer in layers])
            return container
        raise ConfigError(
            f"model.seeds: a population cannot stack a {type(first).__name__} layer yet "
            "(stacked: linear layers, batch norm, dropout and element-wise activations); train the runs one by one "
            "(leave model.seeds unset)."
        )

    return stacked(list(networks))


def member_state(state_dict: dict[str, Tensor], member: int) -> dict[str, Tensor]:
    """Member ``member``'s entries of a population's ``state_dict``: each stacked tensor's slice."""
    return {name: value[member].clone() for name, value in state_dict.items()}


def build_members(seeds: Sequence[int], build: Callable[[], Any]) -> list[Any]:
    """``build()`` once per seed, right after ``torch.manual_seed(seed)``, as a single run of that seed builds
    its networks after ``seed_everything``; torch's global generator is left as it was."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"model.seeds must be distinct seeds, one per member, got {list(seeds)!r}.")
    state = torch.get_rng_state()
    try:
        members = []
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(build())
        return members
    finally:
        torch.set_rng_state(state)


class MemberRandomness:
    """One random stream per member, each the stream torch's global generator is in the member's single
    run (reseeded per epoch and rank as ``callbacks.EpochSeed`` reseeds it), drawn member by member."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)
        self.generators: list[torch.Generator] = []

    def reseed(self, epoch: int, rank: int, device: torch.device) -> None:
        self.generators = [torch.Generator(device).manual_seed(epoch_seed(seed, epoch, rank)) for seed in self.seeds]

    def _each(self, draw: Callable[[torch.Generator], Tensor]) -> Tensor:
        return self.each(lambda _, generator: draw(generator))

    def each(self, draw: Callable[[int, torch.Generator], Tensor]) -> Tensor:
        """``(P, ...)``: ``draw(p, generator_p)`` of every member, stacked."""
        if not self.generators:
            raise RuntimeError("MemberRandomness is drawn from before its first reseed (an epoch start)")
        return torch.stack([draw(member, generator) for member, generator in enumerate(self.generators)])

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """``(P, *shape)``: member p's ``torch.randn(*shape)``."""
        return self._each(lambda g: torch.randn(*shape, generator=g, device=g.device, dtype=dtype))

    def rand(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        """``(P, *shape)``: member p's ``torch.rand(*shape)``."""
        return self._each(lambda g: torch.rand(*shape, generator=g, device=g.device, dtype=dtype))

    def state(self) -> list[Tensor]:
        return [generator.get_state() for generator in self.generators]

    def load_state(self, states: list[Tensor], device: torch.device) -> None:
        self.generators = [torch.Generator(device) for _ in self.seeds]
        for generator, state in zip(self.generators, states):
            generator.set_state(state)


class PopulationMembers:
    """Mixin of a LightningModule that may train a population (``model.seeds``): the members' seeds, their
    networks built and stacked, their random streams reseeded per epoch and carried in checkpoints.

    With ``seeds`` unset it is a single run and nothing here acts: tensors have no member dimension
    (``batch_dims`` 1) and randomness is torch's global generator, as before populations existed.
    """

    #: Checkpoint key of the members' generator states (a mid-epoch resume continues them).
    CHECKPOINT_KEY = "population_rng_states"
    #: Checkpoint key of which members are alive and the training batch at which each other one diverged.
    DIVERGED_KEY = "population_diverged"
    #: Plain attributes a member's view copies from the population (counters its callbacks read, e.g. critic_updates).
    MEMBER_VIEW_ATTRIBUTES: tuple[str, ...] = ()

    def init_population(self, seeds: Sequence[int] | None) -> None:
        self.seeds = None if seeds is None else [int(seed) for seed in seeds]
        #: Leading dimensions that index samples: (sample,) for a run, (member, sample) for a population.
        self.batch_dims = 1 if self.seeds is None else 2
        self.randomness = None if self.seeds is None else MemberRandomness(self.seeds)
        self._restored_rng: list[Tensor] | None = None
        self._member_views: dict[int, nn.Module] = {}
        self._weights_version = 0  # counts the changes of the weights, for the views' copies
        if self.seeds is not None:  # on the device, read only where a wait is paid anyway (see freeze_diverged)
            self.register_buffer("members_alive", torch.ones(len(self.seeds), dtype=torch.bool), persistent=False)
            #: Training batches so far (0-based index of the running one), and the batch each member diverged at (-1: never).
            self.register_buffer("batches_trained", torch.zeros((), dtype=torch.long), persistent=False)
            self.register_buffer("diverged_at", torch.full((len(self.seeds),), -1, dtype=torch.long), persistent=False)

    def freeze_diverged(self, optimizer: Any, *values: Tensor) -> None:
        """Before ``optimizer`` steps: a member any of whose ``values`` (its loss, its gradient norm) is not
        finite has diverged; from here on it is frozen (its gradients and Adam's first moments zeroed, so that
        Adam moves it by 0) and the batch is recorded, while the others train on as they would alone. All on
        the device: a step that writes no logs does not wait (``diverged_members`` reads it)."""
        if self.seeds is None:
            return
        finite = torch.stack([value.isfinite() for value in values]).all(0)
        self.diverged_at.copy_(torch.where(self.members_alive & ~finite, self.batches_trained, self.diverged_at))
        self.members_alive.logical_and_(finite)
        frozen = ~self.members_alive
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                # In place and NaN-safe (a product is not); it writes the frozen members' entries only, where a
                # torch.where would copy every gradient each step (measured: most of a small VAE's step, P = 5).
                frozen_rows = frozen.view(-1, *[1] * (parameter.dim() - 1))
                parameter.grad.masked_fill_(frozen_rows, 0.0)
                moments = optimizer.state.get(parameter, {}).get("exp_avg")
                if moments is not None:
                    moments.masked_fill_(frozen_rows, 0.0)

    def alive_mean(self, values: Tensor) -> Tensor:
        """The mean over the members alive of one value per member (NaN when none is: then the run has diverged)."""
        alive = self.members_alive
        return torch.where(alive, values, 0.0).sum(0) / alive.sum()

    def diverged_members(self) -> dict[int, tuple[int, int]]:
        """``{member: (epoch, batch)}`` (both 0-based) of the members that diverged; reading waits for the device."""
        if self.seeds is None:
            return {}
        per_epoch = self.trainer.num_training_batches
        return {member: divmod(int(batch), per_epoch) for member, batch in enumerate(self.diverged_at.tolist()) if batch >= 0}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.seeds is not None:
            self.batches_trained.add_(1)
            self._weights_version += 1

    def member_view(self, member: int) -> nn.Module:
        """Member ``member`` as the single run it equals (the same class, ``seeds`` unset), for the callbacks
        that read one network (``callbacks.population_members``). Built once; its weights are copied from the
        population's at its first forward after they changed, so a callback that only checks a counter copies
        nothing. Its construction draws from torch's global generator, which is restored after it."""
        view = self._member_views.get(member)
        if view is None:
            arguments = dict(self.hparams)
            # A module the Lightning CLI built holds its config (class_path dicts), rebuilt as a checkpoint's is.
            instantiator = arguments.pop("_instantiator", None)
            arguments |= {"seeds": None} | ({"compile": "none"} if "compile" in arguments else {})
            with torch.random.fork_rng(devices=[]):
                if instantiator is None:
                    view = type(self)(**arguments)
                else:
                    module, _, name = instantiator.rpartition(".")
                    view = getattr(importlib.import_module(module), name)(type(self), arguments)
            view.synced_version = -1
            view.register_forward_pre_hook(lambda module, args: self._copy_weights_to(member, module))
            for child in view.children():
                child.register_forward_pre_hook(lambda module, args, view=view: self._copy_weights_to(member, view))
            self._member_views[member] = view
        view.to(self.device, next(self.parameters()).dtype)
        for name in self.MEMBER_VIEW_ATTRIBUTES:
            setattr(view, name, getattr(self, name))
        return view

    @torch.no_grad()
    def _copy_weights_to(self, member: int, view: nn.Module) -> None:
        if view.synced_version == self._weights_version:
            return
        population = self.state_dict()
        for name, value in view.state_dict().items():
            value.copy_(population[name][member])
        view.synced_version = self._weights_version

    @property
    def members(self) -> int | None:
        """P, or ``None`` for a single run."""
        return None if self.seeds is None else len(self.seeds)

    def build_networks_per_member(self, build: Callable[[], tuple[nn.Module, ...]]) -> tuple[nn.Module, ...]:
        """``build()`` for a single run; for a population, once per member seed, stacked network by network."""
        if self.seeds is None:
            return build()
        members = build_members(self.seeds, build)
        return tuple(stack_members([networks[i] for networks in members], self.randomness) for i in range(len(members[0])))

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if self.randomness is not None:
            self.randomness.reseed(self.current_epoch, self.global_rank, self.device)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self._restored_rng is not None:  # right before the first resumed batch
            if self._restored_rng["device"] == self.device.type:  # else another device's streams: the epoch reseeds
                self.randomness.load_state(self._restored_rng["states"], self.device)
            self._restored_rng = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.randomness is not None and self.randomness.generators:
            checkpoint[self.CHECKPOINT_KEY] = {"device": self.device.type, "states": self.randomness.state()}
        if self.seeds is not None:
            checkpoint[self.DIVERGED_KEY] = {
                name: getattr(self, name).cpu() for name in ("members_alive", "batches_trained", "diverged_at")
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.randomness is not None:
            self._restored_rng = checkpoint.get(self.CHECKPOINT_KEY)
        for name, value in checkpoint.get(self.DIVERGED_KEY, {}).items():
            getattr(self, name).copy_(value)
        self._weights_version += 1

    def log_per_member(self, values: dict[str, Tensor], **options: Any) -> None:
        """``self.log_dict`` of ``values``; a population's (one entry per member) as ``<key>/member_<p>`` and
        their mean as ``<key>``, so that tables and curves of single runs read a population's mean."""
        if self.members is not None:
            values = {
                **{key: value.mean() for key, value in values.items()},
                **{f"{key}/member_{p}": value[p] for key, value in values.items() for p in range(self.members)},
            }
        self.log_dict(values, **options)
