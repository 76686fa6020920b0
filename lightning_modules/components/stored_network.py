"""Networks stored to measure with (the domain classifiers, a VAE's encoder), rebuilt frozen from their file.

A stored file is ``{"network": the constructor's arguments, "state_dict": the weights, ...metadata}`` as
``torch.save`` wrote it, read with ``weights_only=True`` (no code runs on reading). It may be missing, truncated,
a Git LFS pointer or another network's file: each is one line naming the file and the fix, before any training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from core.errors import ConfigError
from core.torch_files import torch_load


def load_stored_network(
    path: str | Path,
    build: type[nn.Module],
    what: str,
    remedy: str,
    weights_of: Callable[[Any], nn.Module] = lambda network: network,
) -> tuple[Any, dict[str, Any]]:
    """``build(**stored["network"])`` with the stored weights loaded into ``weights_of(network)``, in eval mode and
    frozen, and the file's metadata (everything but the weights). ``what`` names the file in an error, ``remedy``
    says how to make a good one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found: {remedy}.")
    try:
        stored = torch_load(path, weights_only=True)
    except OSError:
        raise  # permissions: the entry point names the file
    except Exception:  # noqa: BLE001 - UnpicklingError, a truncated archive, an LFS pointer: not what torch.save wrote
        raise ConfigError(f"{what} {path} is not a file torch.save wrote (truncated or replaced?): {remedy}.") from None
    try:
        network = build(**stored["network"])
        weights_of(network).load_state_dict(stored["state_dict"])
    except (TypeError, KeyError, ValueError, RuntimeError) as error:  # another network's file, or not a network's
        raise ConfigError(
            f"{what} {path}: its network arguments and weights do not make a {build.__name__} ({type(error).__name__}): {remedy}."
        ) from None
    network.eval().requires_grad_(False)
    return network, {key: value for key, value in stored.items() if key != "state_dict"}
