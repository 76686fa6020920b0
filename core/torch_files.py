"""Reading what ``torch.save`` wrote: checkpoints, exported networks, caches."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch


def torch_load(path: Path, weights_only: bool) -> Any:
    """``torch.load`` onto the CPU. What torch warns of while reading a file it then cannot read ("Detected
    pickle protocol 3 in the checkpoint ...": any file that is not a checkpoint) goes with the failure, which
    the caller answers in one line; the warnings of a read that succeeds are given as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = torch.load(path, map_location="cpu", weights_only=weights_only)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return loaded
