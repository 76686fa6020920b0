"""``model.compile``: the maths of a training step captured by ``torch.compile``, one owner for every module.

A module names the functions that hold its step's arithmetic (forward passes and losses, from
tensors in to tensors out: the adversarial module's ``discriminator_loss`` and ``generator_loss``,
the VAE's ``negative_elbo``, the classifier's ``loss_and_correct``) and calls them through
:class:`CompiledSteps`. With ``none`` they run eagerly, as written; otherwise each is compiled once,
on its first call: inductor fuses the element-wise work into few kernels and AOTAutograd compiles
the backward pass too. ``reduce-overhead`` replays those kernels as CUDA graphs on a GPU, where a
small model's step is otherwise launch-bound; on a CPU it compiles like ``default``.

What stays eager, and why:

- the optimizer steps: Lightning's ``LightningOptimizer.step`` (progress counting, hooks, precision
  plugins) is Python that cannot be captured; torch's fused Adam is one kernel per optimizer already;
- the noise and the data order: drawn outside the compiled functions from torch's global generator,
  so a compiled run draws the same latents as an eager one;
- a gradient penalty: it differentiates the critic twice (``create_graph``), which compiled graphs
  do not support; the critic runs eagerly for the penalty term only.

Dropout inside a compiled function draws its masks from inductor's own generator, so a compiled run
with dropout is a different sample of the same algorithm; ``torch._inductor.config.fallback_random``
makes it draw torch's numbers (the equality test does this). Measured gains and compile times are in
docs/benchmarks.md: on a CPU, compiling does not pay for these models, so the default is ``none``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch

from core.errors import ConfigError

CompileMode = Literal["none", "default", "reduce-overhead", "max-autotune"]


def require_compile_mode(mode: str) -> None:
    if mode not in get_args(CompileMode):
        raise ConfigError(f"model.compile must be one of {list(get_args(CompileMode))}, got {mode!r}.")


class CompiledSteps:
    """The step functions of one module, compiled with ``mode`` on first use (or eager with ``none``).

    Not an ``nn.Module`` attribute the checkpoint sees: the compiled functions hold no state of their
    own, so a checkpoint of a compiled run loads into an eager one and back.
    """

    def __init__(self, mode: CompileMode) -> None:
        require_compile_mode(mode)
        self.mode = mode
        self._compiled: dict[str, Callable] = {}

    def __call__(self, function: Callable) -> Callable:
        """``function`` (a bound method of the module) as it should be run: compiled once per name."""
        if self.mode == "none":
            return function
        name = function.__name__
        if name not in self._compiled:
            self._compiled[name] = torch.compile(function, mode=self.mode)
        return self._compiled[name]
