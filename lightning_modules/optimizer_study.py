"""The optimizer study: every run of optimizers × learning rates × seeds trained at once, as one
vectorised population of small MNIST classifiers (docs/optimizers.md).

Run r has its optimizer, its learning rate γ_r and its seed s_r; the seed fixes its initial weights
(the network built right after ``torch.manual_seed(s_r)``, as ``seed_everything`` does for a single
run) and its data order (:func:`datamodules.population.data_order_seed`), so that at one seed every
optimizer and rate starts from the same weights and sees the same minibatches. Per training step::

    x[s], y[s] = the next minibatch of each seed's data order            # datamodules.population.PopulationBatches
    loss[r] = mean cross_entropy(f(θ_r, x[s_r]), y[s_r])               # torch.vmap over the runs
    backpropagate Σ_r loss[r]                                            # ∂/∂θ_r sees only loss[r]
    a run whose loss or gradient is not finite has diverged: record (epoch, batch), freeze it (rate 0)
    each optimizer updates its runs' stacked parameters, one rate per run (components/optimizers.py)

and after each epoch a run whose mean training loss over it exceeds ``max_loss`` has diverged too.
A run inside the population ends with the weights it reaches alone (``lightning_modules.Classifier``
with the same network, optimizer, seed and data order; tested to 1e-5 in float64, and in float32 for
SGD and heavy ball: docs/optimizers.md says why not the adaptive rules). :class:`callbacks.OptimizerStudyReport`
measures every run on the test split and writes the table and the training-loss figures.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ConfigError
from lightning_modules.classifier import NetworkFactory, OptimizerFactory
from lightning_modules.components.mlp import MLPClassifier
from lightning_modules.components.step_logging import show_in_progress_bar


class OptimizerStudy(L.LightningModule):
    """Args:
    sample_shape: (C, H, W); linked from ``data.sample_shape`` by the CLI.
    num_classes: Linked from ``data.num_classes``.
    network: Every run's network, given the input shape and class count; it must have no buffers
        (batch norm) and no dropout, which a vectorised population does not share.
    optimizers: The optimizers compared, each a ``class_path`` whose ``lr`` is set per run.
    learning_rates: The rates each optimizer runs at.
    seeds: The repetitions: initial weights and data order of each run. The CLI links them to
        ``data.population_seeds``, which makes the datamodule serve training batches stacked by seed.
    max_loss: An epoch's mean training loss above this marks a run as diverged (a non-finite loss
        does at once): 10 nats of cross-entropy, four times a uniform guess over 10 classes, means
        the weights have blown up. Judged per epoch, not per minibatch: an adaptive rule's first
        steps may spike the loss of a run that then trains well. ``.inf``: only a non-finite loss.
    """

    def __init__(
        self,
        optimizers: Sequence[OptimizerFactory],
        sample_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        network: NetworkFactory = MLPClassifier,
        learning_rates: Sequence[float] = (0.5, 1e-2, 1e-5),
        seeds: Sequence[int] = (0, 1, 2),
        max_loss: float = 10.0,
    ) -> None:
        super().__init__()
        if not optimizers or not learning_rates or not seeds:
            raise ConfigError("model.optimizers, model.learning_rates and model.seeds must each name at least one.")
        if not max_loss > 0:
            raise ConfigError(f"model.max_loss must be > 0 (.inf: only a non-finite loss diverges), got {max_loss!r}.")
        if len(set(seeds)) < len(seeds) or any(lr < 0 for lr in learning_rates):
            raise ConfigError(
                "model.seeds must differ and model.learning_rates be >= 0, "
                f"got seeds {list(seeds)} and rates {list(learning_rates)}."
            )
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.make_optimizers = list(optimizers)
        self.optimizer_names = [type(make([nn.Parameter(torch.zeros(1))])).__name__ for make in optimizers]
        self.runs = [(name, lr, seed) for name in self.optimizer_names for seed in seeds for lr in learning_rates]

        networks_by_seed = []
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                networks_by_seed.append(network(tuple(sample_shape), num_classes))
        template = networks_by_seed[0]
        if list(template.buffers()) or any(isinstance(module, nn.Dropout) for module in template.modules()):
            raise ConfigError(
                f"model.network {type(template).__name__} has buffers or dropout, which a population of runs cannot share: "
                "choose a network without them."
            )
        self.parameter_names = [name for name, _ in template.named_parameters()]
        members = [member for member in networks_by_seed for _ in learning_rates]  # one optimizer's runs: seed-major, then rate
        self.stacks = nn.ModuleList(
            nn.ParameterList(
                nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in members]))
                for name in self.parameter_names
            )
            for _ in optimizers
        )
        # Not a submodule: its weights are never used, the stacks' are swapped in per run.
        self.run_network = partial(torch.func.functional_call, copy.deepcopy(template).to("meta"))

        runs = len(self.runs)
        self.register_buffer("run_rates", torch.tensor([lr for _, lr, _ in self.runs]))
        self.register_buffer("alive", torch.ones(runs, dtype=torch.bool))
        self.register_buffer("diverged_epoch", torch.full((runs,), -1))
        self.register_buffer("diverged_batch", torch.full((runs,), -1))
        self.register_buffer("epoch_loss_sum", torch.zeros(runs))
        self.register_buffer("epoch_batches", torch.zeros(runs))

    @property
    def run_names(self) -> list[str]:
        return [f"{name}_lr{lr:g}_seed{seed}" for name, lr, seed in self.runs]

    @property
    def logged_metric_names(self) -> set[str]:
        return {f"train/loss/{run}" for run in self.run_names} | {
            f"test/{m}/{run}" for m in ("loss", "acc") for run in self.run_names
        }

    def run_losses(self, stack: nn.ParameterList, images: Tensor, labels: Tensor, per_seed_inputs: bool) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy and correct predictions of one optimizer's runs, ``(seeds * rates,)``
        each. Inputs are one batch per seed, ``(seeds, B, ...)``, with ``per_seed_inputs``, else one
        batch ``(B, ...)`` for all runs."""

        def one_run(parameters: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            logits = self.run_network(parameters, (x,))
            return F.cross_entropy(logits, y), (logits.argmax(1) == y).sum()

        seeds, rates = len(self.hparams.seeds), len(self.hparams.learning_rates)
        # Inner: a seed's runs share its batch, read where it lies (vmap broadcasts it, no gathered copy).
        over_rates = torch.vmap(one_run, in_dims=(0, None, None))
        over_seeds = torch.vmap(over_rates, in_dims=(0, 0, 0) if per_seed_inputs else (0, None, None))
        parameters = {name: p.view(seeds, rates, *p.shape[1:]) for name, p in zip(self.parameter_names, stack)}
        losses, correct = over_seeds(parameters, images, labels)
        return losses.flatten(), correct.flatten()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One step of every run. Nothing in it is read on the host, so it never waits for the device:
        a run's divergence is found, recorded and acted on there (``alive``, ``diverged_*``, its
        gradients zeroed and its rate set to 0), and so are the epoch's running loss sums. The zeroing
        runs in every step, for every run: knowing on the host whether any run is frozen would be a
        wait per step, and one step late is too late (its NaN gradient would reach the weights). The
        host reads these buffers at the epoch's end (``max_loss``, :class:`callbacks.OptimizerStudyReport`)
        and the progress bar reads ``runs_alive`` on the steps the loggers write."""
        images, labels = batch  # (seeds, B, C, H, W), (seeds, B)
        losses = torch.cat([self.run_losses(stack, images, labels, per_seed_inputs=True)[0] for stack in self.stacks])
        self.manual_backward(losses.sum())

        finite = losses.isfinite() & torch.cat([self.finite_gradients(stack) for stack in self.stacks])
        self.mark_diverged(self.alive & ~finite, batch_idx)
        self.epoch_loss_sum += torch.where(self.alive, losses.detach(), 0.0)
        self.epoch_batches += self.alive

        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]  # Lightning unwraps a list of one
        runs_per_optimizer = len(self.runs) // len(self.stacks)
        for k, (optimizer, stack) in enumerate(zip(optimizers, self.stacks)):
            rows = slice(k * runs_per_optimizer, (k + 1) * runs_per_optimizer)
            # Zero gradients, not NaN: a frozen run's optimizer state stays finite, its rate 0 moves nothing.
            frozen = ~self.alive[rows]
            for parameter in stack:
                parameter.grad.masked_fill_(frozen.view(-1, *[1] * (parameter.dim() - 1)), 0.0)
            optimizer.param_groups[0]["lr"] = self.run_rates[rows] * self.alive[rows]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        show_in_progress_bar(self, {"runs_alive": self.alive.sum()})

    @staticmethod
    def finite_gradients(stack: nn.ParameterList) -> Tensor:
        """Per run of one stack: whether its gradients are finite (a sum is NaN or infinite when
        an entry is, or when the gradient is too large to add up: diverged either way)."""
        return torch.stack([parameter.grad.flatten(1).sum(1).isfinite() for parameter in stack]).all(0)

    def on_train_epoch_start(self) -> None:
        self.epoch_loss_sum.zero_()
        self.epoch_batches.zero_()

    def epoch_train_loss(self) -> Tensor:
        """Each run's mean training loss over this epoch's batches before it diverged (NaN after)."""
        return self.epoch_loss_sum / self.epoch_batches

    def mark_diverged(self, runs: Tensor, batch_idx: int) -> None:
        """Record ``runs`` (a mask) as diverged at this epoch and batch (-1: judged at the epoch's end) and freeze them."""
        self.diverged_epoch.masked_fill_(runs, self.current_epoch)
        self.diverged_batch.masked_fill_(runs, batch_idx)
        self.alive &= ~runs

    def on_train_epoch_end(self) -> None:
        self.mark_diverged(self.alive & ~(self.epoch_train_loss() <= self.hparams.max_loss), batch_idx=-1)  # NaN <= x is False
        self.log_dict({f"train/loss/{run}": loss for run, loss in zip(self.run_names, self.epoch_train_loss())}, on_epoch=True)

    def evaluate(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Every run's mean cross-entropy and correct predictions on one batch: ``(runs,)`` each."""
        images = images.to(self.dtype)  # float32 from datamodule.normalize; float64 under precision 64-true
        per_optimizer = [self.run_losses(stack, images, labels, per_seed_inputs=False) for stack in self.stacks]
        return torch.cat([losses for losses, _ in per_optimizer]), torch.cat([correct for _, correct in per_optimizer])

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        losses, correct = self.evaluate(images, labels)
        for run, loss, right in zip(self.run_names, losses, correct):
            self.log_dict({f"test/loss/{run}": loss, f"test/acc/{run}": right / len(labels)}, batch_size=len(labels))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        runs_per_optimizer = len(self.runs) // len(self.stacks)
        return [
            make(list(stack), lr=self.run_rates[k * runs_per_optimizer : (k + 1) * runs_per_optimizer].clone())
            for k, (make, stack) in enumerate(zip(self.make_optimizers, self.stacks))
        ]
