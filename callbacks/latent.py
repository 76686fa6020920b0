"""What an autoencoder's code has learnt: reconstructions, how well the code separates the classes,
the decoded code plane, samples from the prior and interpolations between test images; and the
model's own test metrics during training.

The callbacks rely on this model interface (:class:`lightning_modules.Autoencoder` and
:class:`lightning_modules.VAE` provide it):

- ``code_size: int``, the size of the latent code;
- ``encode(images) -> (N, code_size)``: the code of an autoencoder, the posterior mean of a VAE,
  of images as the datamodule's ``normalize`` gives them;
- ``decode(codes) -> (N, C, H, W)``: images in the datamodule's normalization (its ``denormalize``
  turns them into [0, 1] pixels);
- ``sample_prior(num_samples, generator) -> (N, code_size)``: codes drawn from the prior N(0, I);
  only VAEs have it;
- ``test_metrics((images, labels), batch_idx) -> dict[str, Tensor]``: what its ``test_step`` logs,
  per batch (for :class:`TestSplitMetrics`; the classifier has it too).

They read the test split of an in-memory image datamodule (``split_tensors``), and measure, draw
and write on global rank zero only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import matplotlib
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.utils import make_grid

from callbacks.images import (
    eval_mode,
    log_scalars,
    run_directory,
    save_png,
    send_image_to_loggers,
    write_atomically,
    write_final_metrics,
)
from callbacks.plots import new_figure, save_labelled_grid
from callbacks.sample_grid import EpochFigure
from core.errors import ConfigError

#: Images encoded, and codes compared with all others, at a time: the whole test split at once would
#: hold every activation of 10,000 images, or a 5,000 x 5,000 distance matrix.
CHUNK = 1000


def require_image_datamodule(trainer: L.Trainer, callback: L.Callback, reads_test_split: bool = True) -> None:
    """Fail in ``setup``, before any training, when the images the callback needs cannot be had."""
    name = type(callback).__name__
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "split_tensors"):
        raise ConfigError(f"{name} needs an image datamodule (one with split_tensors, e.g. datamodules.MNISTDataModule) as data: set one, or remove the callback.")
    if reads_test_split and not datamodule.hparams.get("in_memory", True):
        raise ConfigError(f"{name} reads the test split as tensors, which needs data.in_memory: true; set it, or remove the callback.")


@torch.no_grad()
def encode_images(pl_module: L.LightningModule, datamodule: L.LightningDataModule, images: Tensor) -> Tensor:
    """Codes of ``uint8`` images, :data:`CHUNK` at a time, in eval mode, on the CPU."""
    with eval_mode(pl_module):
        chunks = [pl_module.encode(datamodule.normalize(chunk.to(pl_module.device))).float().cpu() for chunk in images.split(CHUNK)]
    return torch.cat(chunks)


@torch.no_grad()
def decode_codes(pl_module: L.LightningModule, datamodule: L.LightningDataModule, codes: Tensor) -> Tensor:
    """[0, 1] pixels of decoded codes, in eval mode, on the CPU."""
    with eval_mode(pl_module):
        return datamodule.denormalize(pl_module.decode(codes.to(pl_module.device)).float()).cpu()


def knn_confusion(train_codes: Tensor, train_labels: Tensor, test_codes: Tensor, test_labels: Tensor, k: int, num_classes: int) -> Tensor:
    """Confusion counts (rows: true class, columns: predicted) of a k-nearest-neighbour majority vote
    in code space, Euclidean. A tied vote goes to the class whose votes are nearer (smaller sum of
    neighbour ranks), then to the lower class index: the same vote on every machine."""
    k = min(k, len(train_codes))
    nearer_first = torch.arange(k, 0, -1)
    # one vote weighs more than all rank tie-breakers together (at most k(k+1)/2): exact, in integers
    vote = k * (k + 1) + nearer_first
    predicted = []
    for chunk in test_codes.split(CHUNK):
        distances = torch.cdist(chunk, train_codes, compute_mode="donot_use_mm_for_euclid_dist")
        neighbour_labels = train_labels[distances.topk(k, dim=1, largest=False).indices]
        votes = torch.zeros(len(chunk), num_classes, dtype=torch.int64).scatter_add_(1, neighbour_labels, vote.expand_as(neighbour_labels))
        predicted.append(votes.argmax(1))
    cells = test_labels * num_classes + torch.cat(predicted)
    return torch.bincount(cells, minlength=num_classes**2).view(num_classes, num_classes)


def most_confused_pairs(confusion: Tensor, class_names: Sequence[str], top: int = 5) -> list[list[Any]]:
    """The class pairs most often mistaken for each other, both directions counted:
    ``[[name_i, name_j, count], ...]``, most confused first, pairs never confused left out."""
    both_ways = (confusion + confusion.T).triu(diagonal=1).flatten()
    order = both_ways.argsort(descending=True, stable=True)[:top]
    num_classes = len(confusion)
    return [[class_names[i // num_classes], class_names[i % num_classes], int(both_ways[i])] for i in order.tolist() if both_ways[i] > 0]


class Reconstructions(EpochFigure):
    """Save ``reconstructions/epoch_NNN.png`` at chosen epochs and send it to the loggers: a fixed
    set of test images, each grid row of originals followed by the row of their reconstructions
    ``decode(encode(x))``, so that grids of different epochs compare.

    Args:
        epochs: 1-based epochs after which to save a grid.
        last: Also save a grid when training ends (after the last epoch, or as ``step_NNNNNNN.png``
            wherever ``max_steps`` or a stop signal ended it).
        num_images: Test images shown.
        nrow: Images per grid row.
        seed: Seed of the choice of test images.
    """

    def __init__(self, epochs: Sequence[int] = (1, 10, 50), last: bool = True, num_images: int = 16, nrow: int = 8, seed: int = 0) -> None:
        if any(epoch < 1 for epoch in epochs) or num_images < 1 or nrow < 1:
            raise ConfigError(f"Reconstructions: epochs are 1-based epoch numbers and num_images, nrow positive; got epochs={list(epochs)}, num_images={num_images}, nrow={nrow}.")
        super().__init__(epochs, last)
        self.num_images = num_images
        self.nrow = nrow
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer) / "reconstructions"
        num_test = len(trainer.datamodule.split_tensors("test")[1])
        self.indices = torch.randperm(num_test, generator=torch.Generator().manual_seed(self.seed))[: self.num_images]

    def grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """Rows of originals, each followed by their reconstructions; short last rows padded blank."""
        datamodule = trainer.datamodule
        images = datamodule.split_tensors("test")[0][self.indices]
        originals = images.float().cpu() / 255
        reconstructions = decode_codes(pl_module, datamodule, encode_images(pl_module, datamodule, images))
        rows = []
        for original_row, reconstruction_row in zip(originals.split(self.nrow), reconstructions.split(self.nrow)):
            blank = torch.ones(self.nrow - len(original_row), *original_row.shape[1:])
            rows += [original_row, blank, reconstruction_row, blank]
        return make_grid(torch.cat(rows), nrow=self.nrow, padding=2, pad_value=1.0)

    def save_figure(self, trainer: L.Trainer, pl_module: L.LightningModule, name: str) -> None:
        path = self.directory / f"{name}.png"
        save_labelled_grid(self.grid(trainer, pl_module), ["original", "reconstruction"] * math.ceil(len(self.indices) / self.nrow), path)
        send_image_to_loggers(trainer, "reconstructions", path, caption=f"{name} (step {trainer.global_step})")


class LatentSpace(L.Callback):
    """How well the code separates the classes: a k-nearest-neighbour classifier in code space,
    fitted on one half of the first ``num_points`` test codes and scored on the other half.

    Logs ``latent/knn_accuracy``, draws ``latent_confusion.png`` (the confusion matrix) and, for a
    2-D code, ``latent_space.png`` (the codes coloured by class); when training ends also writes
    ``latent_knn_accuracy``, ``latent_confusion`` (rows: true class, columns: predicted) and
    ``latent_confused_pairs`` (``[[class, class, count], ...]``, both directions counted, top 5) into
    ``final_metrics.json``, keeping the keys other callbacks wrote there.

    Args:
        num_points: Test images encoded (the first ones; at most the whole test split).
        neighbours: k of the k-NN vote.
        every_n_epochs: Also measure every that many epochs (0: only when training ends).
        seed: Seed of the split into fitted and scored halves.
    """

    def __init__(self, num_points: int = 10_000, neighbours: int = 10, every_n_epochs: int = 0, seed: int = 0) -> None:
        if num_points < 2 or neighbours < 1 or every_n_epochs < 0:
            raise ConfigError(f"LatentSpace needs num_points >= 2, neighbours >= 1 and every_n_epochs >= 0; got {num_points}, {neighbours}, {every_n_epochs}.")
        self.num_points = num_points
        self.neighbours = neighbours
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.last: dict[str, Any] | None = None
        self.measured_at_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or self.measured_at_step == trainer.global_step:
            return
        datamodule = trainer.datamodule
        images, labels = (tensor[: self.num_points] for tensor in datamodule.split_tensors("test"))
        codes, labels = encode_images(pl_module, datamodule, images), labels.cpu()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        fitted, scored = order[: len(order) // 2], order[len(order) // 2 :]
        class_names = list(datamodule.class_names)
        confusion = knn_confusion(codes[fitted], labels[fitted], codes[scored], labels[scored], self.neighbours, len(class_names))
        accuracy = confusion.diag().sum().item() / confusion.sum().item()
        log_scalars(trainer, {"latent/knn_accuracy": accuracy})
        title = f"test codes at step {trainer.global_step}: {self.neighbours}-NN accuracy {accuracy:.1%}"
        write_atomically(self.directory / "latent_confusion.png", lambda path: draw_confusion(path, confusion, class_names, title))
        if codes.shape[1] == 2:
            write_atomically(self.directory / "latent_space.png", lambda path: draw_codes(path, codes, labels, class_names, title))
        self.last = {
            "latent_knn_accuracy": accuracy,
            "latent_confusion": confusion.tolist(),
            "latent_confused_pairs": most_confused_pairs(confusion, class_names),
        }
        self.measured_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.measure(trainer, pl_module)
        if trainer.is_global_zero and self.last is not None:
            write_final_metrics(self.directory, self.last)
            figure = "latent_space" if pl_module.code_size == 2 else "latent_confusion"
            send_image_to_loggers(trainer, figure, self.directory / f"{figure}.png", caption=f"step {trainer.global_step}")


def draw_codes(path: str, codes: Tensor, labels: Tensor, class_names: Sequence[str], title: str) -> None:
    """Scatter of 2-D codes, one colour per class. The view holds the central 98 % of each axis (an
    autoencoder's code has long tails that would squeeze the crowded centre into a corner); how many
    points fall outside is in the title."""
    figure = new_figure(7, 6)
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    for label, name in enumerate(class_names):
        points = codes[labels == label]
        axes.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=2, color=colours(label % 10), label=name)
    low, high = torch.quantile(codes, torch.tensor([0.01, 0.99]), dim=0)
    margin = 0.05 * (high - low)
    low, high = low - margin, high + margin
    outside = int(((codes < low) | (codes > high)).any(dim=1).sum())
    axes.set(xlim=(low[0].item(), high[0].item()), ylim=(low[1].item(), high[1].item()), xlabel="code 1", ylabel="code 2")
    axes.set_title(f"{title}\n({outside} of {len(codes)} points outside the view)" if outside else title, fontsize=10)
    axes.legend(markerscale=5, loc="center left", bbox_to_anchor=(1, 0.5))
    figure.savefig(path, format="png", dpi=110)


def draw_confusion(path: str, confusion: Tensor, class_names: Sequence[str], title: str) -> None:
    """The confusion matrix as a heat map, each cell annotated with its count."""
    figure = new_figure(7, 6)
    axes = figure.add_subplot()
    image = axes.imshow(confusion.numpy(), cmap="Blues")
    dark = confusion.max().item() / 2
    for true, row in enumerate(confusion.tolist()):
        for predicted, count in enumerate(row):
            axes.text(predicted, true, str(count), ha="center", va="center", fontsize=7, color="white" if count > dark else "black")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90 if max(map(len, class_names)) > 2 else 0)
    axes.set_yticks(ticks, class_names)
    axes.set(title=title, xlabel="predicted class", ylabel="true class")
    figure.colorbar(image, ax=axes, shrink=0.8, label="test images")
    figure.savefig(path, format="png", dpi=110)


class LatentManifold(L.Callback):
    """When training ends, save ``latent_manifold.png``: the decoded images of a ``grid_size`` x
    ``grid_size`` grid over a 2-D code plane, first code left to right, second bottom to top (as in
    ``latent_space.png``). A VAE's grid spans the 5%..95% quantiles of its N(0, I) prior, where its
    codes are meant to be; an autoencoder has no prior, so its grid spans the 1st..99th percentile of
    its test codes along each axis. A code of another size has no plane to draw: the callback then
    says so once and draws nothing, so that one callback list serves a family's 2-D and wider models.

    Args:
        grid_size: Images per row and column.
    """

    def __init__(self, grid_size: int = 20) -> None:
        if grid_size < 2:
            raise ConfigError(f"LatentManifold.grid_size must be >= 2, got {grid_size}.")
        self.grid_size = grid_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.draws = pl_module.code_size == 2
        if not self.draws:
            rank_zero_info(f"LatentManifold: the code has {pl_module.code_size} dimensions, not 2; no latent_manifold.png.")
            return
        require_image_datamodule(trainer, self, reads_test_split=not hasattr(pl_module, "sample_prior"))
        self.directory = run_directory(trainer)

    def axis_values(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Tensor:
        """``(grid_size, 2)``: the values each code takes along its axis of the grid."""
        if hasattr(pl_module, "sample_prior"):
            quantiles = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, self.grid_size))
            return quantiles[:, None].expand(-1, 2)
        codes = encode_images(pl_module, trainer.datamodule, trainer.datamodule.split_tensors("test")[0])
        low, high = torch.quantile(codes, torch.tensor([0.01, 0.99]), dim=0)
        return torch.stack([torch.linspace(low[axis], high[axis], self.grid_size) for axis in range(2)], dim=1)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.draws:
            return
        values = self.axis_values(trainer, pl_module)
        second, first = torch.meshgrid(values[:, 1].flip(0), values[:, 0], indexing="ij")  # image rows: second code, top = highest
        images = decode_codes(pl_module, trainer.datamodule, torch.stack([first, second], dim=-1).reshape(-1, 2))
        path = self.directory / "latent_manifold.png"
        save_png(make_grid(images, nrow=self.grid_size, padding=0), path)
        send_image_to_loggers(trainer, "latent_manifold", path, caption=f"step {trainer.global_step}")


class PriorSamples(L.Callback):
    """When training ends, save ``samples/prior.png`` and send it to the loggers: decoded codes
    drawn from a VAE's prior (with a fixed seed), what the VAE generates.

    Args:
        num_samples: Images in the grid.
        nrow: Images per grid row.
        seed: Seed of the prior codes.
    """

    def __init__(self, num_samples: int = 64, nrow: int = 8, seed: int = 0) -> None:
        if num_samples < 1 or nrow < 1:
            raise ConfigError(f"PriorSamples.num_samples and nrow must be positive, got {num_samples} and {nrow}.")
        self.num_samples = num_samples
        self.nrow = nrow
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "sample_prior"):
            raise ConfigError(
                f"PriorSamples decodes codes drawn from a prior, and {type(pl_module).__name__} has none (no sample_prior): "
                "remove the callback or train a VAE (model.class_path: lightning_modules.VAE)."
            )
        require_image_datamodule(trainer, self, reads_test_split=False)
        self.directory = run_directory(trainer) / "samples"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        codes = pl_module.sample_prior(self.num_samples, torch.Generator().manual_seed(self.seed))
        images = decode_codes(pl_module, trainer.datamodule, codes)
        path = self.directory / "prior.png"
        save_png(make_grid(images, nrow=self.nrow, padding=2, pad_value=1.0), path)
        send_image_to_loggers(trainer, "prior_samples", path, caption=f"step {trainer.global_step}")


def pairs_of_different_classes(labels: Tensor, pairs: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Indices of up to ``pairs`` disjoint random pairs whose two labels differ."""
    order = torch.randperm(len(labels), generator=generator)
    half = len(order) // 2
    first, second = order[:half], order[half : 2 * half]
    different = labels[first] != labels[second]
    return first[different][:pairs], second[different][:pairs]


class Interpolation(L.Callback):
    """When training ends, save ``interpolation.png``: per row, the decoded codes on the straight
    line between the codes of two test images of different classes, ``steps`` of them; the first
    and last columns are the two images' reconstructions. Shows whether the space between classes
    decodes to plausible images (a VAE's should) or to blur.

    Args:
        steps: Images per row, both ends included.
        pairs: Rows (pairs of test images, fixed by ``seed``).
        seed: Seed of the choice of pairs.
    """

    def __init__(self, steps: int = 10, pairs: int = 4, seed: int = 0) -> None:
        if steps < 2 or pairs < 1:
            raise ConfigError(f"Interpolation needs steps >= 2 and pairs >= 1, got steps={steps}, pairs={pairs}.")
        self.steps = steps
        self.pairs = pairs
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        starts, ends = pairs_of_different_classes(labels.cpu(), self.pairs, torch.Generator().manual_seed(self.seed))
        start_codes, end_codes = encode_images(pl_module, datamodule, images[starts]), encode_images(pl_module, datamodule, images[ends])
        weights = torch.linspace(0.0, 1.0, self.steps)[None, :, None]
        codes = start_codes[:, None] + weights * (end_codes - start_codes)[:, None]
        decoded = decode_codes(pl_module, datamodule, codes.flatten(0, 1))
        path = self.directory / "interpolation.png"
        save_png(make_grid(decoded, nrow=self.steps, padding=2, pad_value=1.0), path)
        send_image_to_loggers(trainer, "interpolation", path, caption=f"step {trainer.global_step}")


class TestSplitMetrics(L.Callback):
    """The model's test metrics (``pl_module.test_metrics``, what ``train.py test`` reports) on the
    whole test split, every ``every_n_epochs`` epochs and when training ends: the curve of test
    reconstruction error, NLL or accuracy against epoch, and in ``final_metrics.json``
    ``test_<name>_epoch_<E>`` of each measured epoch and ``test_<name>`` at the end, from ``fit``
    alone. Batches and their indices are the test loader's, so the numbers are those of
    ``train.py test`` in one process.

    Args:
        every_n_epochs: Measurement period (0: only when training ends).
    """

    __test__ = False  # a callback, not a pytest test class

    def __init__(self, every_n_epochs: int = 10) -> None:
        if every_n_epochs < 0:
            raise ConfigError(f"TestSplitMetrics.every_n_epochs must be >= 0 (0: at the end only), got {every_n_epochs}.")
        self.every_n_epochs = every_n_epochs
        self.measured_at_step: int | None = None
        self.by_epoch: dict[str, float] = {}  # written when training ends: final_metrics.json marks a finished run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_image_datamodule(trainer, self)
        self.directory = run_directory(trainer)

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        images, labels = datamodule.split_tensors("test")
        sums: dict[str, float] = {}
        with eval_mode(pl_module):
            for batch_idx, (chunk, chunk_labels) in enumerate(zip(images.split(datamodule.batch_size), labels.split(datamodule.batch_size))):
                batch = (datamodule.normalize(chunk.to(pl_module.device)), chunk_labels.to(pl_module.device))
                for name, value in pl_module.test_metrics(batch, batch_idx).items():
                    sums[name] = sums.get(name, 0.0) + value.item() * len(chunk)
        metrics = {name: total / len(images) for name, total in sums.items()}
        log_scalars(trainer, {f"test/{name}": value for name, value in metrics.items()})
        self.measured_at_step = trainer.global_step
        return metrics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and self.every_n_epochs and epoch % self.every_n_epochs == 0:
            self.last = self.measure(trainer, pl_module)
            self.by_epoch |= {f"test_{name}_epoch_{epoch}": value for name, value in self.last.items()}

    def state_dict(self) -> dict[str, dict[str, float]]:
        return {"by_epoch": dict(self.by_epoch)}  # a resumed run still reports the epochs before it

    def load_state_dict(self, state_dict: dict[str, dict[str, float]]) -> None:
        self.by_epoch = dict(state_dict.get("by_epoch", {}))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self.measured_at_step != trainer.global_step:
            self.last = self.measure(trainer, pl_module)
        write_final_metrics(self.directory, self.by_epoch | {f"test_{name}": value for name, value in self.last.items()})
