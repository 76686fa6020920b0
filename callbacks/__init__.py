"""Callbacks shared by every experiment: sample grids, learning curves, NaN guard, per-epoch seeding;
for the 2-D mixtures, sample-quality metrics and the critic landscape; the classifier export and the
classifier-based sample quality (FID, KID, IS, class coverage); for the autoencoders, what their code has
learnt (reconstructions, class separation, the decoded code plane, prior samples, interpolations);
test metrics during training and a classifier's test confusion matrix; the optimizer study's report.
(``callbacks.optuna_pruning.OptunaPruning``, a search trial's reports to Optuna, is imported only by
the runs of a study search: it brings Optuna and SQLAlchemy.)"""

from callbacks.autoencoder_figures import Interpolation, PriorSamples, Reconstructions
from callbacks.classification import TestConfusion
from callbacks.export import ExportClassifier
from callbacks.latent_space import LatentManifold, LatentSpace
from callbacks.learning_curves import LearningCurves
from callbacks.mixture import CriticLandscape, MixtureMetrics
from callbacks.nonfinite import StopOnNonFiniteLoss
from callbacks.optimizer_study import OptimizerStudyReport
from callbacks.sample_grid import SampleGrid
from callbacks.sample_quality import SampleQuality
from callbacks.seeding import EpochSeed
from callbacks.test_split_metrics import TestSplitMetrics

__all__ = [
    "CriticLandscape",
    "EpochSeed",
    "ExportClassifier",
    "Interpolation",
    "LatentManifold",
    "LatentSpace",
    "LearningCurves",
    "MixtureMetrics",
    "OptimizerStudyReport",
    "PriorSamples",
    "Reconstructions",
    "SampleGrid",
    "SampleQuality",
    "StopOnNonFiniteLoss",
    "TestConfusion",
    "TestSplitMetrics",
]
