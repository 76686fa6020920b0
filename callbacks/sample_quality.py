"""Sample quality of an image generator, measured offline with genlab's own domain classifier.

FID and KID compare the classifier's penultimate features of generated and real images, the
Inception Score uses its logits, and mode coverage its predicted classes — the practice for
MNIST-like data, where Inception weights are neither available offline nor meaningful. Precision,
recall, density and coverage take fidelity and diversity apart on the same features and, where a
VAE encoder is stored, on those features beside its codes (the space where precision falls under
noise and blur alike: docs/domain_classifiers.md); confident class coverage counts only the samples
the classifier is sure of.

Every image goes through the classifier once per evaluation: one forward pass yields both its
features and its logits (the classifier is the bulk of an evaluation's cost, and running it once per
metric repeated the same work), and torchmetrics' metrics take those rows through an identity
``feature=`` extractor, :class:`FeatureRows`, so that their states, their reduction across DDP ranks
and their random subsets stay theirs. The reference's k-NN radii, half of precision/recall/density/
coverage's distances, depend on the reference alone: SampleQuality computes them once, beside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from callbacks.periodic import PeriodicMeasurement
from callbacks.run_outputs import eval_mode, log_scalars
from core.errors import ConfigError
from core.seeding import seeded
from datamodules.loaders import rank_shard
from lightning_modules.classifier import load_classifier
from lightning_modules.components.distribution_metrics import precision_recall_density_coverage, reference_radii, side_by_side
from lightning_modules.vae import load_encoder


class ClassifierFeatures(nn.Module):
    """A domain classifier on ``[0, 1]`` images: :meth:`features_and_logits` from one forward pass
    of the network, ``forward`` the penultimate features alone. Frozen, in eval mode."""

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, feature_dim)`` features and ``(N, classes)`` logits: the network's own forward,
        its feature layer's output caught on the way (a hook, so the logits are exactly the network's)."""
        caught: list[Tensor] = []
        hook = self.network.feature_layer.register_forward_hook(lambda module, inputs, output: caught.append(output))
        try:
            logits = self.network((images.float() - self.mean) / self.std)
        finally:
            hook.remove()
        return caught[0], logits

    def forward(self, images: Tensor) -> Tensor:
        return self.features_and_logits(images)[0]


class FeatureRows(nn.Identity):
    """torchmetrics' ``feature=`` extractor for rows computed already: passes them on, and names their
    width (``num_features``, which FID reads instead of running a dummy image through it)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


def class_coverage(predicted: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Histogram of predicted classes, how many classes are covered, and KL(histogram || uniform)
    (0 for a perfectly balanced generator, log(num_classes) when it emits one class only)."""
    histogram = torch.bincount(predicted, minlength=num_classes).double() / len(predicted)
    present = histogram > 0
    kl = (histogram[present] * (histogram[present] * num_classes).log()).sum()
    return {"class_histogram": histogram, "classes_covered": present.sum().double(), "class_kl": kl}


def confident_class_coverage(logits: Tensor, num_classes: int, threshold: float) -> dict[str, Tensor]:
    """:func:`class_coverage` over the samples the classifier assigns with probability >= ``threshold``
    only, and the share of the others (``ambiguous_share``): an argmax alone counts a blob as a digit."""
    confidence, predicted = logits.softmax(1).max(1)
    confident = confidence >= threshold
    coverage = class_coverage(predicted[confident], num_classes) if confident.any() else {
        "class_histogram": torch.zeros(num_classes, dtype=torch.float64),
        "classes_covered": torch.tensor(0.0, dtype=torch.float64),
        "class_kl": torch.tensor(math.nan),
    }  # fmt: skip
    return {f"confident_{name}": value for name, value in coverage.items()} | {"ambiguous_share": 1 - confident.double().mean()}


class ImageQualityMetrics(nn.Module):
    """FID, KID, IS and class coverage against cached real statistics (torchmetrics states, so
    they are reduced across DDP ranks when computed); precision, recall, density and coverage in the
    classifier's features and, given a VAE ``encoder`` file, in those beside the encoder's codes.
    Each image added goes through the classifier once: every metric takes the rows of that pass."""

    def __init__(
        self,
        classifier: str | Path,
        kid_subset_size: int = 1000,
        k_precision_recall: int = 3,
        k_density_coverage: int = 5,
        confidence: float = 0.9,
        encoder: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.encoder = load_encoder(encoder)[0] if encoder else None
        network, meta = load_classifier(classifier)
        self.num_classes = len(meta["class_names"])
        self.k_precision_recall, self.k_density_coverage, self.confidence = k_precision_recall, k_density_coverage, confidence
        self.features = ClassifierFeatures(network, meta["mean"], meta["std"])
        self.fid = FrechetInceptionDistance(feature=FeatureRows(network.feature_dim), reset_real_features=False)
        with warnings.catch_warnings():  # "will save all extracted features": bounded here by num_samples
            warnings.filterwarnings(
                "ignore", message=r"Metric `(Kernel Inception Distance|InceptionScore)` will save all extracted features"
            )
            self.kid = KernelInceptionDistance(
                feature=FeatureRows(network.feature_dim), subset_size=kid_subset_size, reset_real_features=False
            )
            self.inception_score = InceptionScore(feature=FeatureRows(self.num_classes), normalize=False, splits=1)
        self.has_real = False
        self.generated_logits: list[Tensor] = []
        self.generated: dict[str, list[Tensor]] = {}

    def fidelity_spaces(self, images: Tensor, features: Tensor | None = None) -> dict[str, Tensor]:
        """The rows precision, recall, density and coverage compare: the classifier's ``features``
        (those given, when the images went through it already) and, with an encoder, its ``codes``."""
        spaces = {"features": self.features(images) if features is None else features}
        if self.encoder is not None:
            spaces["codes"] = self.encoder(images)
        return spaces

    def add_real(self, images: Tensor) -> None:
        features = self.features(images)
        self.fid.update(features, real=True)
        self.kid.update(features, real=True)
        self.has_real = True

    def add_generated(self, images: Tensor) -> None:
        features, logits = self.features.features_and_logits(images)
        self.fid.update(features, real=False)
        self.kid.update(features, real=False)
        self.inception_score.update(logits)
        self.generated_logits.append(logits)
        for space, rows in self.fidelity_spaces(images, features).items():
            self.generated.setdefault(space, []).append(rows)

    def compared_rows(self, reference: dict[str, Tensor], generated: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """The ``(real, generated)`` rows precision, recall, density and coverage compare, by their
        metrics' prefix: the classifier's features (``""``) and, with codes, both side by side (``"joint_"``)."""
        rows = {"": (reference["features"], generated["features"])}
        if "codes" in generated:
            spaces = "features", "codes"
            rows["joint_"] = side_by_side([reference[space] for space in spaces], [generated[space] for space in spaces])
        return rows

    def reference_radii(self, reference: dict[str, Tensor]) -> dict[str, dict[int, Tensor]]:
        """The k-NN radii of ``reference``'s points in each space of :meth:`compared_rows`, for
        :meth:`compute`: they depend on the reference alone (passed as its own samples here: only its rows are used)."""
        k = self.k_precision_recall, self.k_density_coverage
        return {prefix: reference_radii(real, k) for prefix, (real, _) in self.compared_rows(reference, reference).items()}

    def compute(
        self,
        reference: dict[str, Tensor],
        gather: Callable[[Tensor], Tensor] = Tensor.cpu,
        radii: dict[str, dict[int, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Every metric of the samples added since the last call, against the real images of
        ``add_real`` (FID, KID) and ``reference``, real images' :meth:`fidelity_spaces` (precision,
        recall, density, coverage; ``joint_*`` in both spaces side by side); ``radii``: its
        :meth:`reference_radii`, where the caller keeps them (else computed anew). ``gather`` collects a
        rank's ``(n, d)`` rows from every rank (under DDP); the predicted classes are left in ``self.predicted``."""
        logits = gather(torch.cat(self.generated_logits))
        generated = {space: gather(torch.cat(rows)) for space, rows in self.generated.items()}
        self.generated_logits, self.generated = [], {}
        self.predicted = logits.argmax(1)
        with seeded(0):  # KID's random subsets (drawn on the CPU): the same at every measurement, whatever trained
            kid_mean, kid_std = self.kid.compute()
        with warnings.catch_warnings():  # IS's std over one split is undefined; only its mean is reported
            warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom is <= 0")
            inception_score = self.inception_score.compute()[0]
        metrics = {"fid": self.fid.compute(), "kid": kid_mean, "kid_std": kid_std, "inception_score": inception_score}
        for metric in (self.fid, self.kid, self.inception_score):
            metric.reset()  # real features are kept (reset_real_features=False)
        k = self.k_precision_recall, self.k_density_coverage
        compared = self.compared_rows(reference, generated)
        radii = radii or dict.fromkeys(compared)  # None: every call computes them anew
        fidelity_diversity = {
            f"{prefix}{name}": value
            for prefix, (real, fake) in compared.items()
            for name, value in precision_recall_density_coverage(real, fake, *k, real_radii=radii[prefix]).items()
        }
        return (
            metrics
            | class_coverage(self.predicted, self.num_classes)
            | confident_class_coverage(logits, self.num_classes, self.confidence)
            | fidelity_diversity
        )


#: FID of the 10,000 real test images against 10,000 training images in each stored classifier's features
#: (docs/domain_classifiers.md, the uncorrupted row): what a generator that matched the data would score.
REAL_IMAGES_FID = {"mnist": 7.72, "fashion_mnist": 0.75}

#: Where the domain classifiers live: ``lenet_<data.dataset_name>.pt``.
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"


def domain_classifier(datamodule: L.LightningDataModule) -> Path:
    """The stored classifier of the datamodule's dataset, or one error saying how to make one."""
    name = getattr(datamodule, "dataset_name", type(datamodule).__name__)
    path = PRETRAINED_DIR / f"lenet_{name}.pt"
    if not path.is_file():
        raise ConfigError(
            f"SampleQuality has no domain classifier for {name} ({path} is missing): train and export one with a "
            f"classifier config (see configs/classifier_mnist.yaml) or set the callback's classifier path."
        )
    return path


def stored_encoder(datamodule: L.LightningDataModule) -> Path | None:
    """The stored VAE encoder of the datamodule's dataset, if there is one."""
    path = PRETRAINED_DIR / f"vae_encoder_{getattr(datamodule, 'dataset_name', '')}.pt"
    return path if path.is_file() else None


def conditional_accuracy(predicted: Tensor, requested: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Share of samples classified as the class they were generated for, overall and per class."""
    hits = (predicted == requested).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, requested, hits)
    per_class /= torch.bincount(requested, minlength=num_classes).clamp_min(1)
    return {"conditional_accuracy": hits.mean(), "conditional_accuracy_per_class": per_class}


class SampleQuality(PeriodicMeasurement):
    """Every ``every_n_epochs`` epochs and when training ends, generate ``num_samples`` images and
    log ``quality/fid``, ``quality/kid``, ``quality/inception_score``, ``quality/classes_covered``
    and ``quality/class_kl`` to every logger — and, for a conditional model (one whose
    ``fixed_inputs`` returns labels), ``quality/conditional_accuracy``; ``quality/precision``,
    ``recall``, ``density`` and ``coverage`` against as many test images (and ``joint_precision``,
    ``joint_recall``, ... with a VAE encoder beside the classifier); and the class coverage of
    the confidently classified samples only (``quality/confident_classes_covered``,
    ``confident_class_kl``, ``ambiguous_share``). At the end it also writes ``final_metrics.json``
    (with the class histograms and the per-class conditional accuracy).

    The real statistics come from ``num_real`` training images, computed at the first
    evaluation and kept. Under DDP each rank measures its share of both sets and torchmetrics
    reduces the states, so the numbers are those of the whole sets. Under ``fast_dev_run`` the
    classifier is loaded (a wrong path still fails) but nothing is measured.

    Args:
        classifier: File written by :class:`callbacks.ExportClassifier`. Default: the stored one
            of the datamodule's dataset, ``pretrained/lenet_<dataset_name>.pt``.
        every_n_epochs: Evaluation period.
        num_samples: Generated images per evaluation (10,000 is the usual FID sample size).
        num_real: Real training images behind the cached statistics (the first ones; at most
            the whole training split).
        kid_subset_size: Subset size of KID's unbiased estimate (at most ``num_samples``).
        batch_size: Images generated and featurised at a time.
        seed: Seed of the generator's noise (the same images every evaluation).
        k_precision_recall: Neighbours of the k-NN balls of precision and recall (Kynkäänniemi et al.: 3).
        k_density_coverage: Neighbours of the k-NN balls of density and coverage (Naeem et al.: 5).
        confidence: Class probability from which a sample counts as confidently classified.
        encoder: File written by ``python -m cli.export encoder``. Default: the stored one of
            the datamodule's dataset, ``pretrained/vae_encoder_<dataset_name>.pt``,
            where there is one (MNIST). Precision, recall, density and coverage are then also
            measured on the classifier's features beside the encoder's posterior means (each scaled
            by its mean norm on the test images), the ``joint_*`` metrics: in the classifier's space
            alone noise and blur *raise* precision (docs/domain_classifiers.md).
    """

    measured_on_every_rank = True  # each rank generates and featurises its share; torchmetrics reduces the states

    def __init__(
        self,
        classifier: str | None = None,
        every_n_epochs: int = 5,
        num_samples: int = 10_000,
        num_real: int = 10_000,
        kid_subset_size: int = 1000,
        batch_size: int = 500,
        seed: int = 0,
        k_precision_recall: int = 3,
        k_density_coverage: int = 5,
        confidence: float = 0.9,
        encoder: str | None = None,
    ) -> None:
        if min(every_n_epochs, num_samples, num_real, kid_subset_size, batch_size, k_precision_recall, k_density_coverage) < 1:
            raise ConfigError(
                "SampleQuality's every_n_epochs, num_samples, num_real, kid_subset_size, batch_size, k_precision_recall "
                "and k_density_coverage must all be >= 1."
            )
        if not 0 < confidence <= 1:
            raise ConfigError(f"SampleQuality.confidence must be in (0, 1], got {confidence!r}.")
        super().__init__(every_n_epochs)
        self.k_precision_recall, self.k_density_coverage, self.confidence = k_precision_recall, k_density_coverage, confidence
        self.reference: dict[str, Tensor] | None = None
        self.reference_radii: dict[str, dict[int, Tensor]] | None = None
        self.classifier, self.encoder = classifier, encoder
        self.num_samples, self.num_real = num_samples, num_real
        self.kid_subset_size, self.batch_size, self.seed = kid_subset_size, batch_size, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.num_samples % trainer.world_size:
            raise ConfigError(
                f"SampleQuality.num_samples ({self.num_samples}) must be a multiple of the {trainer.world_size} processes."
            )
        super().setup(trainer, pl_module, stage)
        self.dataset_name = getattr(trainer.datamodule, "dataset_name", type(trainer.datamodule).__name__)
        classifier = self.classifier or domain_classifier(trainer.datamodule)
        encoder = self.encoder or stored_encoder(trainer.datamodule)
        self.metrics = ImageQualityMetrics(
            classifier,
            min(self.kid_subset_size, self.num_samples),
            self.k_precision_recall,
            self.k_density_coverage,
            self.confidence,
            encoder,
        ).to(pl_module.device)

    @staticmethod
    def gather_rows(trainer: L.Trainer, rows: Tensor) -> Tensor:
        """Every rank's ``(n, d)`` rows, stacked on the CPU (row order does not matter to the metrics)."""
        return trainer.strategy.all_gather(rows).reshape(-1, rows.shape[-1]).cpu()

    def shard(self, trainer: L.Trainer, total: int) -> Tensor:
        """This rank's indices among ``total``: every ``world_size``-th from its rank."""
        return rank_shard(torch.arange(total), trainer.global_rank, trainer.world_size)

    def measures_now(self, trainer: L.Trainer) -> bool:
        """Never under ``fast_dev_run``: a smoke test loads the classifier, but measures nothing."""
        return not trainer.fast_dev_run and super().measures_now(trainer)

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        datamodule = trainer.datamodule
        if not self.metrics.has_real:
            num_real = min(self.num_real, datamodule.split_size("train"))
            real = datamodule.images("train", self.shard(trainer, num_real))
            for chunk in real.split(self.batch_size):
                self.metrics.add_real(chunk.to(pl_module.device).float() / 255)
        if self.reference is None:  # precision/recall/density/coverage: as many test images as samples
            test = datamodule.images("test", self.shard(trainer, min(self.num_samples, datamodule.split_size("test"))))
            spaces = [
                self.metrics.fidelity_spaces(chunk.to(pl_module.device).float() / 255) for chunk in test.split(self.batch_size)
            ]
            self.reference = {name: self.gather_rows(trainer, torch.cat([space[name] for space in spaces])) for name in spaces[0]}
            self.reference_radii = self.metrics.reference_radii(self.reference)  # every rank holds the whole reference
        z, labels = pl_module.fixed_inputs(self.num_samples, torch.Generator().manual_seed(self.seed))
        mine = self.shard(trainer, self.num_samples)
        with eval_mode(pl_module):
            for index in mine.split(self.batch_size):
                batch_labels = None if labels is None else labels[index].to(pl_module.device)
                self.metrics.add_generated(
                    datamodule.denormalize(pl_module.generate(z[index].to(pl_module.device), batch_labels))
                )
        metrics = self.metrics.compute(self.reference, partial(self.gather_rows, trainer), self.reference_radii)
        if labels is not None:
            requested = trainer.strategy.all_gather(labels[mine].to(pl_module.device)).flatten().cpu()
            metrics |= conditional_accuracy(self.metrics.predicted, requested, self.metrics.num_classes)
        scalars = {name: float(value) for name, value in metrics.items() if value.dim() == 0}
        log_scalars(trainer, {f"quality/{name}": value for name, value in scalars.items()})
        return {name: value.tolist() for name, value in metrics.items()}  # scalars and per-class lists

    def final_metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        return {**self.last, "epoch": trainer.current_epoch}

    def describe(self, trainer: L.Trainer) -> str:
        return f"sample quality of {self.num_samples:,} generated images (FID, KID, IS, classes, precision/recall)"

    def headline(self, metrics: dict[str, Any]) -> list[str]:
        if "fid" not in metrics:
            return []
        real = REAL_IMAGES_FID.get(self.dataset_name)
        reference = f"real test images score {real}" if real is not None else "no real-data reference stored"
        fid = (
            f"FID {metrics['fid']:.1f} in the {self.dataset_name} classifier's features ({reference}; "
            "it compares genlab runs of one dataset, not Inception FIDs: docs/domain_classifiers.md)"
        )
        coverage = (
            f"classes covered {metrics['classes_covered']:.0f} of {len(metrics['class_histogram'])}, "
            f"class KL {metrics['class_kl']:.3f} (0: balanced), IS {metrics['inception_score']:.2f}, "
            f"precision {metrics['precision']:.2f}, recall {metrics['recall']:.2f}"
        )
        lines = [fid, coverage]
        if "conditional_accuracy" in metrics:
            lines.append(f"conditional accuracy {metrics['conditional_accuracy']:.3f} (the classifier reads the requested class)")
        return lines
