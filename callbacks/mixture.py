"""What a generator of 2-D mixture data has learnt: sample-quality metrics and pictures of the game.

Both callbacks work in critic iterations (training batches, the k of the WGAN algorithm) and
need a :class:`datamodules.toy2d.GaussianMixtureDataModule` (its modes and its true distribution).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from callbacks.plots import RedrawSchedule, draw_panels, new_figure
from callbacks.run_outputs import (
    eval_mode,
    log_scalars,
    run_directory,
    send_image_to_loggers,
    write_atomically,
    write_final_metrics,
)
from lightning_modules.components.distribution_metrics import (
    binned_js,
    binned_kl,
    gaussian_mmd2,
    mode_statistics,
    sliced_wasserstein1,
)

PANELS = {
    "modes captured": ["modes", "modes_reached"],
    "high-quality samples": ["high_quality"],
    "reverse KL (modes)": ["reverse_kl"],
    "MMD² (Gaussian kernel)": ["mmd2"],
    "sliced W1": ["sliced_w1"],
    "binned divergences": ["kl", "js"],
}


@torch.no_grad()
def generated_points(pl_module: L.LightningModule, num_samples: int, seed: int) -> Tensor:
    """``num_samples`` points from the generator's fixed noise ``seed``, in eval mode, on the CPU; a population's
    ``(P, num_samples, 2)``, every member from the same noise (as each member's run alone draws it)."""
    sampler = getattr(pl_module, "generator", pl_module)  # a GAN's generator; a flow samples by its own inverse
    dtype = next(sampler.parameters()).dtype  # float64 under precision 64-true
    z = pl_module.sample_latent(num_samples, torch.Generator().manual_seed(seed)).to(pl_module.device, dtype)
    members = getattr(pl_module, "members", None)
    with eval_mode(sampler):
        return pl_module.generate(z if members is None else z.expand(members, *z.shape), None).float().cpu()


def iteration_of(pl_module: L.LightningModule) -> int:
    """Critic iterations of an adversarial module; optimizer steps of a model with no critic (a flow)."""
    return int(getattr(pl_module, "critic_updates", pl_module.global_step))


class EveryCriticIteration(L.Callback):
    """Base of callbacks that act at chosen critic iterations. A training step may hold several
    critic updates (``data.minibatches_per_step``), so they act at the end of the step that
    reached an iteration, not only of one that ends on it."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.iteration_at_step_start = iteration_of(pl_module)

    def reached(self, pl_module: L.LightningModule, iterations: Iterable[int]) -> bool:
        """Whether the training step just ended took the critic to or past one of ``iterations``."""
        return any(self.iteration_at_step_start < i <= iteration_of(pl_module) for i in iterations)

    def reached_multiple(self, pl_module: L.LightningModule, every: int) -> bool:
        """Whether the training step just ended took the critic to or past a multiple of ``every``."""
        return iteration_of(pl_module) // every > self.iteration_at_step_start // every


class MixtureMetrics(EveryCriticIteration):
    """Every ``every_n_iterations`` critic iterations and when training ends, measure
    ``num_samples`` generated points against the data's mixture, log ``eval/<metric>`` to every
    logger, redraw ``mixture_metrics.png`` (metrics vs iteration) and, at the end, write
    ``final_metrics.json`` (the last evaluation and the training wall time). A population's members
    are measured one by one: ``eval/<metric>/member_<p>``, ``eval/<metric>`` their mean over the
    members alive (the figure's curves), and ``final_metrics.json`` holds ``members`` (each member's last
    evaluation) and ``diverged`` (member: [epoch, batch]); each member's own is ``member_<p>/final_metrics.json``.

    Metrics (:mod:`lightning_modules.components.distribution_metrics`): PacGAN's ``modes``
    captured, ``high_quality`` fraction (within 3 std of a mode) and ``reverse_kl`` of the mode
    histogram; ``mmd2`` (Gaussian kernel), ``sliced_w1``, and ``kl`` = KL(data || generated) and
    ``js`` on binned histograms, against fresh points of the true mixture.

    Args:
        every_n_iterations: Evaluation period in critic iterations.
        num_samples: Generated (and fresh true) points per evaluation; PacGAN uses 2,500.
        min_count: High-quality samples a mode needs to count as captured (genlab's stricter rule;
            PacGAN's code counts a mode with one, ``modes_reached``).
        mmd_bandwidth: Kernel bandwidth; of the order of the modes' spacing resolves modes.
        bins: Histogram bins per axis of the binned divergences.
        seed: Seed of the fixed generator noise and of the true reference points.
        redraw_seconds: ``mixture_metrics.png`` is redrawn after an evaluation at most this often,
            and when training ends (0: after every evaluation).
    """

    def __init__(
        self,
        every_n_iterations: int = 1000,
        num_samples: int = 2500,
        min_count: int = 20,
        mmd_bandwidth: float = 0.5,
        bins: int = 50,
        seed: int = 0,
        redraw_seconds: float = 30.0,
    ) -> None:
        self.redraw = RedrawSchedule(redraw_seconds)
        self.every_n_iterations = every_n_iterations
        self.num_samples = num_samples
        self.min_count = min_count
        self.mmd_bandwidth = mmd_bandwidth
        self.bins = bins
        self.seed = seed
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.last_iteration: int | None = None
        self.reference: Tensor | None = None
        #: A population's: each member's last evaluation, and where members diverged (member: (epoch, batch)).
        self.member_metrics: list[dict[str, float]] = []
        self.diverged: dict[int, tuple[int, int]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)
        self.start_time = time.perf_counter()
        self.num_modes = len(trainer.datamodule.means)

    def measure(self, points: Tensor, datamodule) -> dict[str, float]:
        if self.reference is None:  # fresh points of the true mixture, drawn once per run
            self.reference, _ = datamodule.sample(self.num_samples, self.seed + 1)
        reference = self.reference
        metrics = mode_statistics(points, datamodule.means, datamodule.mode_stds, datamodule.weights, self.min_count)
        metrics |= {
            "mmd2": gaussian_mmd2(points, reference, self.mmd_bandwidth),
            "sliced_w1": sliced_wasserstein1(points, reference, seed=self.seed),
            "kl": binned_kl(reference, points, self.bins),
            "js": binned_js(reference, points, self.bins),
        }
        return {name: float(value) for name, value in metrics.items()}

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float] | None:
        iteration = iteration_of(pl_module)
        if not trainer.is_global_zero or iteration == self.last_iteration:
            return None
        points = generated_points(pl_module, self.num_samples, self.seed)
        if getattr(pl_module, "members", None) is None:
            metrics, logged = self.measure(points, trainer.datamodule), {}
        else:
            self.member_metrics = [self.measure(member, trainer.datamodule) for member in points]
            alive = [m for m, on in zip(self.member_metrics, pl_module.members_alive.tolist()) if on] or self.member_metrics
            metrics = {name: sum(member[name] for member in alive) / len(alive) for name in self.member_metrics[0]}
            logged = {f"eval/{k}/member_{p}": v for p, member in enumerate(self.member_metrics) for k, v in member.items()}
            self.diverged = pl_module.diverged_members()
        for name, value in metrics.items():
            self.history.setdefault(name, []).append((iteration, value))
        log_scalars(trainer, {f"eval/{k}": v for k, v in metrics.items()} | logged)
        if self.redraw.due():
            self.draw()
        self.last_iteration = iteration
        return metrics

    def draw(self) -> None:
        panels = {title: {name: self.history.get(name, []) for name in names} for title, names in PANELS.items()}
        write_atomically(
            self.directory / "mixture_metrics.png",
            lambda path: draw_panels(path, panels, "critic iteration", {"MMD² (Gaussian kernel)"}),
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.reached_multiple(pl_module, self.every_n_iterations):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(trainer, pl_module)
        if not trainer.is_global_zero or not self.history:
            return
        self.draw()
        final = {name: values[-1][1] for name, values in self.history.items()}
        final |= {"iteration": iteration_of(pl_module), "train_seconds": time.perf_counter() - self.start_time}
        if getattr(pl_module, "members", None) is not None:
            final |= {"members": self.member_metrics, "diverged": {str(p): list(at) for p, at in self.diverged.items()}}
            for member, metrics in enumerate(self.member_metrics):  # where the other callbacks write a member's
                diverged = {"diverged_at": list(self.diverged[member])} if member in self.diverged else {}
                common = {"iteration": final["iteration"], "train_seconds": final["train_seconds"]}
                write_final_metrics(self.directory / f"member_{member}", metrics | common | diverged)
        write_final_metrics(self.directory, final)
        send_image_to_loggers(
            trainer, "mixture_metrics", self.directory / "mixture_metrics.png", caption=f"iteration {final['iteration']}"
        )

    def headline(self, metrics: dict[str, Any]) -> list[str]:
        """For the run's closing summary: the mode metrics against the mixture's own number of modes."""
        if "modes" not in metrics:
            return []
        modes = (
            f"modes {metrics['modes']:.0f} of {self.num_modes} captured (>= {self.min_count} high-quality samples each; "
            f"{metrics['modes_reached']:.0f} with one, PacGAN's rule)"
        )
        quality = f"high quality {100 * metrics['high_quality']:.1f} % (within 3 std of a mode)"
        return [f"{modes}, {quality}, reverse KL {metrics['reverse_kl']:.3f}, MMD² {metrics['mmd2']:.4f} (0: the data's own)"]

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_iteration": self.last_iteration, "member_metrics": self.member_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history, self.last_iteration = state_dict["history"], state_dict["last_iteration"]
        self.member_metrics = state_dict.get("member_metrics", [])


def colour_range(values: Tensor, span: float | None) -> dict[str, float]:
    """``imshow``'s colour limits: the top ``span`` of ``values``, or (``None``) matplotlib's whole range."""
    if span is None:
        return {}
    top = values.max().item()
    return {"vmin": top - span, "vmax": top}


class CriticLandscape(EveryCriticIteration):
    """Real and generated points over the critic's contour (the model's ``landscape``: a flow's log density), at
    chosen critic iterations and at the end.

    Saves ``landscape/iteration_NNNNNNN.png`` per snapshot (also sent to the loggers: W&B shows
    them as one image with a step slider) and ``landscape.png`` with every snapshot side by side.
    The view is fixed by the data (its bounding box plus ``margin``), so snapshots compare;
    generated points outside it are counted in the title. The snapshots are checkpointed, so a
    resumed run keeps the earlier panels.

    Args:
        iterations: Critic iterations after which to take a snapshot.
        num_samples: Real and generated points drawn.
        resolution: Critic evaluations per axis of the contour.
        margin: Space around the data's bounding box.
        seed: Seed of the fixed generator noise.
    """

    def __init__(
        self,
        iterations: Sequence[int] = (500, 2000, 10000),
        num_samples: int = 1000,
        resolution: int = 120,
        margin: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.iterations = set(iterations)
        self.num_samples = num_samples
        self.resolution = resolution
        self.margin = margin
        self.seed = seed
        self.snapshots: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)

    @torch.no_grad()
    def snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        iteration = iteration_of(pl_module)
        if not trainer.is_global_zero or (self.snapshots and self.snapshots[-1]["iteration"] == iteration):
            return
        real = trainer.datamodule.points[: self.num_samples]
        low, high = real.min(0).values - self.margin, real.max(0).values + self.margin
        axes = [torch.linspace(low[i], high[i], self.resolution) for i in range(2)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="xy"), dim=-1).reshape(-1, 2)
        with eval_mode(pl_module):
            dtype = next(pl_module.parameters()).dtype  # float64 under precision 64-true
            values = pl_module.landscape(grid.to(pl_module.device, dtype)).float().cpu()
        self.snapshots.append(
            {
                "iteration": iteration,
                "generated": generated_points(pl_module, self.num_samples, self.seed),
                "critic": values.reshape(self.resolution, self.resolution),  # the critic's, or a flow's log density
                "bounds": (low, high),
                "label": pl_module.landscape_label,
                "span": pl_module.landscape_span,
            }
        )
        snapshot_path = self.directory / "landscape" / f"iteration_{iteration:07d}.png"
        write_atomically(snapshot_path, lambda path: self.draw(path, self.snapshots[-1:], real))
        write_atomically(self.directory / "landscape.png", lambda path: self.draw(path, self.snapshots, real))
        send_image_to_loggers(trainer, "landscape", snapshot_path, caption=f"iteration {iteration}")

    def draw(self, path: str, snapshots: list[dict[str, Any]], real: Tensor) -> None:
        figure = new_figure(4 * len(snapshots), 4)
        for axes, snap in zip(figure.subplots(1, len(snapshots), squeeze=False)[0], snapshots):
            (low, high), generated = snap["bounds"], snap["generated"]
            extent = (low[0].item(), high[0].item(), low[1].item(), high[1].item())
            colours = colour_range(snap["critic"], snap.get("span"))
            contour = axes.imshow(
                snap["critic"].numpy(), origin="lower", extent=extent, cmap="coolwarm", aspect="equal", **colours
            )
            axes.scatter(*real.T.numpy(), s=2, c="black", alpha=0.5, label="real")
            axes.scatter(*generated.T.numpy(), s=2, c="gold", alpha=0.6, label="generated")
            outside = int(((generated < low) | (generated > high)).any(dim=1).sum())
            axes.set(
                xlim=extent[:2],
                ylim=extent[2:],
                title=f"iteration {snap['iteration']}" + (f" ({outside} outside)" if outside else ""),
            )
            # snapshots checkpointed before the label was kept are critics
            figure.colorbar(contour, ax=axes, shrink=0.7, label=snap.get("label", "critic"))
        figure.axes[0].legend(loc="upper right", markerscale=4)
        figure.savefig(path, format="png", dpi=100)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.reached(pl_module, self.iterations):
            self.snapshot(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.snapshot(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.snapshots = state_dict["snapshots"]
