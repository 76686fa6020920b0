"""The bookkeeping around a manual-optimization training step: what it logs, and when.

A step hands over one dict of statistics per update it made (e.g. the adversarial step: one per
discriminator update, with the generator's beside it when G stepped too); :class:`StepStatistics`
turns them into ``train/<name>_step`` and ``train/<name>_epoch`` values the cheap way, so that the
step itself reads as its algorithm. :func:`gradient_norm` is the statistic measured before each
optimizer step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import Metric

#: Up to this many gradient elements in all, :func:`gradient_norm` copies them into one vector.
ONE_VECTOR_MAX_ELEMENTS = 2**18


def gradient_norm(optimizer: Optimizer, members: int | None = None) -> Tensor:
    """Global L2 norm of the gradients of the parameters ``optimizer`` steps (after DDP's all-reduce,
    so the same on every rank); for a population of ``members`` runs (stacked parameters), one per member.
    Small gradients are copied into one vector and dotted with themselves: three kernels, where
    per-tensor work would cost more in launches than in arithmetic. Larger ones are dotted tensor by
    tensor and the squares summed: no copy, and BLAS reads each with every thread, faster on a CPU than
    ``torch.nn.utils.get_total_norm``'s per-tensor norms. The parameters come from the optimizer's list,
    not a walk of the network's modules (which costs more than the norm itself for a small network)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if members is not None:  # per member: small gradients as one matrix, larger ones tensor by tensor (no copy)
        if sum(g.numel() for g in grads) <= ONE_VECTOR_MAX_ELEMENTS * members:
            return torch.linalg.vector_norm(torch.cat([g.reshape(members, -1) for g in grads], dim=1), dim=1)
        return torch.stack([torch.linalg.vector_norm(g.reshape(members, -1), dim=1) for g in grads]).square().sum(0).sqrt()
    flat = [g.reshape(-1) for g in grads]
    if sum(g.numel() for g in flat) <= ONE_VECTOR_MAX_ELEMENTS:
        vector = torch.cat(flat)
        return vector.dot(vector).sqrt()
    return torch.stack([g.dot(g) for g in flat]).sum().sqrt()


def writes_step_logs(trainer: L.Trainer) -> bool:
    """Whether Lightning's loggers write the step values of the training batch now running: every
    ``log_every_n_steps``-th batch (counted across epochs, as on the loggers' step axis) and the
    last one; told from the fit loop's public batch progress."""
    every = trainer.log_every_n_steps
    return every > 0 and (
        (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every == 0 or trainer.should_stop or bool(trainer.fast_dev_run)
    )


def show_in_progress_bar(module: L.LightningModule, values: dict[str, Tensor]) -> None:
    """The family's headline numbers for the progress bar (``callbacks.progress_bar``), not for the
    loggers: kept on the module, on the device, on the steps the loggers write
    (:func:`writes_step_logs`), where the bar reads them; reading waits for the device, which those
    steps do anyway. Not ``self.log(prog_bar=True)``: Lightning converts every progress-bar value it
    holds to a Python number after every batch, a wait per step for a value logged steps before."""
    if writes_step_logs(module.trainer):
        keep_for_progress_bar(module, values)


def keep_for_progress_bar(module: L.LightningModule, values: dict[str, Tensor]) -> None:
    """What :func:`show_in_progress_bar` does on a logging step, for a caller that already knows it is one."""
    module.progress_bar_values = {name: value.detach() for name, value in values.items()}


def progress_bar_values(module: L.LightningModule) -> dict[str, Tensor]:
    """What :func:`show_in_progress_bar` kept last (nothing before the first logging step)."""
    return getattr(module, "progress_bar_values", {})


class EpochMean(Metric):
    """A mean fed with sums: ``update(total, count)`` adds ``total`` (a sum of ``count`` values) to
    the running sum. :class:`StepStatistics` accumulates its statistics' sums on the device in one
    tensor and hands each its share once per epoch; torchmetrics then reduces sum and count across
    DDP ranks, as ``MeanMetric`` would, and Lightning computes, logs and resets it at epoch end."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, total: Tensor, count: int) -> None:
        self.total += total
        self.count += count

    def compute(self) -> Tensor:
        return self.total / self.count


class StepStatistics:
    """Mixin of a LightningModule that logs named per-update statistics: ``train/<name>_step`` (mean
    over one training step's updates, this rank) and ``train/<name>_epoch`` (mean over the epoch's
    updates and the ranks).

    A subclass calls :meth:`track_statistics` in its ``__init__`` and :meth:`log_stats` at the end
    of each training step. Where the arithmetic is cheap, per-update Python is what a step costs
    (docs/benchmarks.md has the profile), so an update adds its statistics, stacked, to one running
    sum on the device (two kernels, whatever the number of statistics; counts are Python integers),
    and the sums reach their :class:`EpochMean` s only when the epoch may end: after a batch that
    can be its last (the last batch, a stop requested, ``max_steps`` reached) and after a
    validation run (which may request a stop), so before any callback's ``on_train_epoch_end`` reads
    them. Step values go to Lightning only on the steps its loggers write (:func:`writes_step_logs`).
    Nothing here reads a value on the host, so a step that writes no logs never waits for the device.
    """

    #: The log keys of a statistic's step and epoch values; ``None``: no step values (a module whose
    #: logged names predate this class keeps them: the VAE's epoch ELBO is ``train/elbo``).
    STEP_LOG_KEY: str | None = "train/{name}_step"
    EPOCH_LOG_KEY = "train/{name}_epoch"

    def track_statistics(
        self,
        names: Iterable[str],
        in_progress_bar: Iterable[str] = (),
        members: int | None = None,
        member_mean: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """The statistics to log, in logging order, and those the progress bar shows. A population of
        ``members`` runs has each statistic per member (``train/<name>_epoch/member_<p>``) and their
        ``member_mean`` (``train/<name>_epoch``; the mean over the members alive)."""
        self.statistic_names = tuple(names)
        self._members = members
        self._member_mean = member_mean or (lambda values: values.mean(0))
        #: Epoch means of the logged statistics (reduced across DDP ranks by torchmetrics), by log key.
        self.epoch_means = nn.ModuleDict({self._metric_key(name): EpochMean() for name in self.statistic_names})
        if members is not None:
            self.epoch_means.update(
                {self._metric_key(name, p): EpochMean() for name in self.statistic_names for p in range(members)}
            )
        self._position = {name: index for index, name in enumerate(self.statistic_names)}
        self._in_progress_bar = tuple(in_progress_bar)
        #: Index tensors of the statistics an update holds, by their names and device (most hold all: None).
        self._indices: dict[tuple[tuple[str, ...], torch.device], Tensor | None] = {}
        self._reset_epoch_sums()

    @staticmethod
    def _metric_key(name: str, member: int | None = None) -> str:
        return name if member is None else f"{name}__member_{member}"

    def _log_key(self, name: str, kind: str, member: int | None = None) -> str:
        key = (self.STEP_LOG_KEY if kind == "step" else self.EPOCH_LOG_KEY).format(name=name)
        return key if member is None else f"{key}/member_{member}"

    def _reset_epoch_sums(self) -> None:
        #: Sums since the last hand-over, one entry per statistic (allocated at the first update).
        self._epoch_sums: Tensor | None = None
        #: Updates since the last hand-over, by the names of the statistics they hold.
        self._updates_by_names: Counter[tuple[str, ...]] = Counter()
        self._epoch_means_logged: set[str] = set()

    @property
    def logged_metric_names(self) -> set[str]:
        """The epoch metrics this module logs (``train/<stat>``): what a learning-curve panel may name."""
        return {f"train/{name}" for name in self.statistic_names}

    def log_stats(self, updates: list[dict[str, Tensor]], batch_size: int) -> dict[str, Tensor]:
        """Log the statistics of one training step's ``updates``; return their means over the step."""
        for stats in updates:
            self._add_to_epoch_sums(stats, batch_size)
        step_means = updates[0] if len(updates) == 1 else self._means(updates)
        if self.STEP_LOG_KEY is not None and writes_step_logs(self.trainer):
            values = {
                self._log_key(k, "step"): v if self._members is None else self._member_mean(v) for k, v in step_means.items()
            }
            for member in range(self._members or 0):
                values |= {self._log_key(k, "step", member): v[member] for k, v in step_means.items()}
            self.log_dict(values, on_step=True, on_epoch=False, batch_size=batch_size)
            shown = {k: step_means[k] for k in self._in_progress_bar if k in step_means}
            keep_for_progress_bar(self, {k: v if self._members is None else self._member_mean(v) for k, v in shown.items()})
        return step_means

    def _add_to_epoch_sums(self, stats: dict[str, Tensor], batch_size: int) -> None:
        values = torch.stack(list(stats.values()))
        if self._epoch_sums is None:
            dtype = torch.promote_types(values.dtype, torch.float32)
            self._epoch_sums = torch.zeros(len(self.statistic_names), *values.shape[1:], dtype=dtype, device=values.device)
        names = tuple(stats)
        key = (names, values.device)
        if key not in self._indices:
            in_order = names == self.statistic_names
            self._indices[key] = None if in_order else torch.tensor([self._position[n] for n in names], device=values.device)
        index = self._indices[key]
        if index is None:
            self._epoch_sums.add_(values)
        else:
            self._epoch_sums.index_add_(0, index, values.to(self._epoch_sums.dtype))
        if names not in self._updates_by_names:
            for name in set(names) - self._epoch_means_logged:
                # The metric objects themselves, once an epoch: Lightning computes, logs and resets them at epoch end.
                for member in (None, *range(self._members or 0)):
                    metric = self.epoch_means[self._metric_key(name, member)]
                    self.log(self._log_key(name, "epoch", member), metric, on_step=False, on_epoch=True, batch_size=batch_size)
                self._epoch_means_logged.add(name)
        self._updates_by_names[names] += 1

    def _means(self, updates: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        names = [name for name in self.statistic_names if any(name in stats for stats in updates)]
        return {name: torch.stack([stats[name] for stats in updates if name in stats]).mean(0) for name in names}

    def _hand_over_epoch_sums(self) -> None:
        """Give each epoch mean its sum and count since the last hand-over."""
        if self._epoch_sums is None:
            return
        counts: Counter[str] = Counter()
        for names, updates in self._updates_by_names.items():
            counts.update(dict.fromkeys(names, updates))
        for name, total in zip(self.statistic_names, self._epoch_sums.unbind()):
            if not counts[name]:
                continue
            if self._members is None:
                self.epoch_means[name].update(total, counts[name])
                continue
            self.epoch_means[name].update(self._member_mean(total), counts[name])  # the mean of the members' means
            for member in range(self._members):
                self.epoch_means[self._metric_key(name, member)].update(total[member], counts[name])
        self._epoch_sums = None
        self._updates_by_names = Counter({names: 0 for names in self._updates_by_names})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        trainer = self.trainer
        epoch_may_end = (
            trainer.is_last_batch
            or trainer.should_stop
            or batch_idx + 1 >= trainer.num_training_batches
            or (trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps)
        )
        if epoch_may_end:
            self._hand_over_epoch_sums()

    def on_validation_end(self) -> None:
        super().on_validation_end()
        if self.trainer.state.fn == "fit":
            self._hand_over_epoch_sums()

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._reset_epoch_sums()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._reset_epoch_sums()
