"""The optimization course's update rules, hand-written as ``torch.optim.Optimizer`` subclasses.

With ĝ the minibatch gradient, γ the learning rate (``lr``) and t the step count from 0::

    SGD         θ ← θ − γ ĝ
    HeavyBall   m ← ρ m + ĝ;                      θ ← θ − γ m
    RMSProp     r ← τ r + (1 − τ) ĝ⊙ĝ;            θ ← θ − γ ĝ / (δ + √r)
    Adam        m₁ ← β₁m₁ + (1 − β₁)ĝ;  m₂ ← β₂m₂ + (1 − β₂)ĝ⊙ĝ;
                m̂₁ = m₁/(1 − β₁^{t+1});  m̂₂ = m₂/(1 − β₂^{t+1});   θ ← θ − γ m̂₁ / (δ + √m̂₂)
    AMSGrad     Adam with m₂ᵐᵃˣ ← max(m₂ᵐᵃˣ, m̂₂) in place of m̂₂

AMSGrad here keeps the maximum of the *bias-corrected* m̂₂, as the course writes it;
``torch.optim.Adam(amsgrad=True)`` keeps the maximum of the uncorrected m₂ and corrects afterwards,
a different algorithm whose early steps are smaller (``tests/test_optimizers.py`` measures by how
much; ``docs/optimizers.md`` says why).

Each is selected from a config like any torch optimizer (``class_path:
lightning_modules.components.optimizers.AMSGrad``). Its state lives in ``self.state`` (checkpointed
and restored by Lightning). For a population of runs trained at once
(:class:`lightning_modules.OptimizerStudy`) every parameter is a stack whose first dimension is the
run, and ``lr`` may be a tensor with one rate per run: the element-wise rules are unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from core.errors import ConfigError

LearningRate = float | Tensor


def per_run(rate: LearningRate, parameter: Tensor) -> LearningRate:
    """A learning rate broadcast against ``parameter``: a float as it is, a tensor of one rate per
    run (a population's first dimension) shaped ``(runs, 1, ..., 1)``."""
    if isinstance(rate, Tensor):
        return rate.view(-1, *[1] * (parameter.dim() - 1))
    return rate


def descend(parameter: Tensor, direction: Tensor, rate: LearningRate, divisor: Tensor | None = None) -> None:
    """θ ← θ − rate · direction [/ divisor], in place, in as few passes over memory as torch.optim's own
    (these are memory-bound: a population's step is mostly such passes)."""
    if divisor is None:
        if isinstance(rate, Tensor):
            parameter.addcmul_(direction, per_run(rate, parameter), value=-1.0)
        else:
            parameter.add_(direction, alpha=-rate)
        return
    if isinstance(rate, Tensor):
        direction, rate = direction * per_run(rate, parameter), 1.0
    parameter.addcdiv_(direction, divisor, value=-rate)


def require_in(name: str, value: float, low: float, high: float) -> None:
    """One line naming the argument, its range and the value given."""
    if not low <= value < high:
        raise ConfigError(f"optimizer {name} must be in [{low}, {high}), got {value!r}.")


def require_positive_rate(lr: LearningRate) -> None:
    if (lr < 0).any() if isinstance(lr, Tensor) else lr < 0:
        raise ConfigError(f"optimizer lr must be >= 0, got {lr!r}.")


class HandWrittenOptimizer(torch.optim.Optimizer):
    """Shared loop: for every parameter with a gradient, :meth:`update` with its state and group."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A model built in Python keeps its optimizer class in its hyperparameters: let checkpoints load it.
        torch.serialization.add_safe_globals([cls])

    def __init__(self, params: Iterable, lr: LearningRate, **defaults) -> None:
        require_positive_rate(lr)
        super().__init__(params, {"lr": lr, **defaults})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is not None:
                    self.update(parameter, parameter.grad, self.state[parameter], group)
        return loss

    def update(self, parameter: Tensor, gradient: Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class SGD(HandWrittenOptimizer):
    """Minibatch SGD: θ ← θ − γ ĝ."""

    def __init__(self, params: Iterable, lr: LearningRate = 1e-2) -> None:
        super().__init__(params, lr)

    def update(self, parameter: Tensor, gradient: Tensor, state: dict, group: dict) -> None:
        descend(parameter, gradient, group["lr"])


class HeavyBall(HandWrittenOptimizer):
    """Polyak's heavy ball: m ← ρ m + ĝ; θ ← θ − γ m (``torch.optim.SGD(momentum=ρ, dampening=0)``)."""

    def __init__(self, params: Iterable, lr: LearningRate = 1e-2, momentum: float = 0.9) -> None:
        require_in("momentum", momentum, 0.0, 1.0)
        super().__init__(params, lr, momentum=momentum)

    def update(self, parameter: Tensor, gradient: Tensor, state: dict, group: dict) -> None:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(parameter)
        velocity = state["momentum_buffer"].mul_(group["momentum"]).add_(gradient)
        descend(parameter, velocity, group["lr"])


class RMSProp(HandWrittenOptimizer):
    """RMSProp: r ← τ r + (1 − τ) ĝ⊙ĝ; θ ← θ − γ ĝ / (δ + √r) (``torch.optim.RMSprop(alpha=τ, eps=δ)``)."""

    def __init__(self, params: Iterable, lr: LearningRate = 1e-2, decay: float = 0.99, eps: float = 1e-8) -> None:
        require_in("decay", decay, 0.0, 1.0)
        require_in("eps", eps, 0.0, float("inf"))
        super().__init__(params, lr, decay=decay, eps=eps)

    def update(self, parameter: Tensor, gradient: Tensor, state: dict, group: dict) -> None:
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(parameter)
        square_avg = state["square_avg"].mul_(group["decay"]).addcmul_(gradient, gradient, value=1 - group["decay"])
        descend(parameter, gradient, group["lr"], divisor=square_avg.sqrt().add_(group["eps"]))


class Adam(HandWrittenOptimizer):
    """Adam (Kingma & Ba, 2015): bias-corrected first and second moments; the reference the
    hand-written rules are compared with (``torch.optim.Adam`` to 1e-6, tested)."""

    def __init__(
        self, params: Iterable, lr: LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        require_in("betas[0]", betas[0], 0.0, 1.0)
        require_in("betas[1]", betas[1], 0.0, 1.0)
        require_in("eps", eps, 0.0, float("inf"))
        super().__init__(params, lr, betas=tuple(betas), eps=eps)

    def update(self, parameter: Tensor, gradient: Tensor, state: dict, group: dict) -> None:
        if "step" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(parameter)
            state["exp_avg_sq"] = torch.zeros_like(parameter)
        beta1, beta2 = group["betas"]
        state["step"] += 1  # t + 1 of the pseudo-code
        first = state["exp_avg"].lerp_(gradient, 1 - beta1)
        second = state["exp_avg_sq"].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        # m̂₁ / (δ + √m̂₂) with both corrections folded into scalars, as torch.optim.Adam computes it
        root = self.root_of_corrected_second_moment(second, 1 - beta2 ** state["step"], state)
        descend(parameter, first, group["lr"] / (1 - beta1 ** state["step"]), divisor=root.add_(group["eps"]))

    def root_of_corrected_second_moment(self, second_moment: Tensor, correction: float, state: dict) -> Tensor:
        """√m̂₂ = √(m₂ / correction), as a new tensor."""
        return second_moment.sqrt().div_(math.sqrt(correction))


class AMSGrad(Adam):
    """AMSGrad (Reddi et al., 2018) as the course writes it: m₂ᵐᵃˣ ← max(m₂ᵐᵃˣ, m̂₂) of the
    bias-corrected m̂₂, so the effective step size γ / (δ + √m₂ᵐᵃˣ) never grows."""

    def root_of_corrected_second_moment(self, second_moment: Tensor, correction: float, state: dict) -> Tensor:
        """√m₂ᵐᵃˣ after m₂ᵐᵃˣ ← max(m₂ᵐᵃˣ, m̂₂)."""
        if "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(second_moment)
        return torch.maximum(state["max_exp_avg_sq"], second_moment / correction, out=state["max_exp_avg_sq"]).sqrt()
