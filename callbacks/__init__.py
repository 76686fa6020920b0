"""Callbacks shared by every experiment: sample grids, learning curves, NaN guard, per-epoch seeding."""

from callbacks.learning_curves import LearningCurves
from callbacks.nonfinite import NonFiniteLossError, StopOnNonFiniteLoss
from callbacks.sample_grid import SampleGrid
from callbacks.seeding import EpochSeed

__all__ = ["SampleGrid", "LearningCurves", "StopOnNonFiniteLoss", "NonFiniteLossError", "EpochSeed"]
