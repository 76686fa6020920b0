"""Ways to keep a WGAN critic (approximately) 1-Lipschitz, as interchangeable strategies.

The Wasserstein-1 dual ``sup_{||d||_L <= 1} E[d(real)] - E[d(fake)]`` only means something if the
critic's Lipschitz constant is bounded. A strategy is chosen in a config as an object with its own
arguments (``model.init_args.lipschitz: {class_path: GradientPenalty, init_args: {weight: 10}}``,
or ``--model.init_args.lipschitz GradientPenalty`` on the command line); a new strategy is one
subclass of :class:`LipschitzStrategy`. Each acts at one or more of three points of the critic
update:

- ``prepare(critic)``   once, before training (e.g. register parametrizations, first normalisation);
- ``penalty(...)``      a term added to the critic's loss (gradient penalty);
- ``after_step(critic)`` right after the critic's optimizer step (clipping, renormalisation).

For a stack of linear layers and 1-Lipschitz activations (ReLU, LeakyReLU), the product of the
layers' spectral norms bounds the critic's Lipschitz constant, which is what spectral
normalisation drives to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import ConfigError
from lightning_modules.components.population import StackedLinear


def linear_layers(critic: nn.Module) -> list[nn.Linear | StackedLinear]:
    """The critic's linear layers: ``nn.Linear``, or a population's stacked ones (weights ``(P, out, in)``)."""
    return [module for module in critic.modules() if isinstance(module, nn.Linear | StackedLinear)]


class LipschitzStrategy:
    """How the critic is kept Lipschitz; every hook is a no-op here, subclasses override some.

    A strategy keeps its constructor arguments as attributes of the same names: that is how the
    command line shows and saves an instance (``--print_config``, the run's hyperparameters).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A model built in Python keeps its strategy object in its hyperparameters: let checkpoints load it.
        torch.serialization.add_safe_globals([cls])

    #: Whether :meth:`penalty` returns a term (the training step logs it as ``d_penalty``).
    has_penalty = False

    def prepare(self, critic: nn.Module) -> None:
        """Called once before training."""

    def penalty(
        self,
        score: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        rand: Callable[..., Tensor] | None = None,
        batch_dims: int = 1,
        critic: nn.Module | None = None,
    ) -> Tensor | None:
        """A term added to the critic's loss (one per member for a population), or ``None``. ``score`` is the
        critic on its inputs (packs, with packing); ``rand(*shape)`` draws uniform numbers where the strategy
        needs them (a population's: each member's from its own stream); ``batch_dims`` leading dimensions index
        the samples (2 for a population: member, sample); ``critic`` is the network, for a penalty on its weights."""
        return None

    @torch.no_grad()
    def after_step(self, critic: nn.Module) -> None:
        """Called after every critic optimizer step."""


class NoConstraint(LipschitzStrategy):
    """No constraint at all: the baseline the other strategies are measured against."""


class WeightClipping(LipschitzStrategy):
    """Arjovsky et al. (2017): clamp every critic parameter to ``[-c, c]`` after each step.

    Crude (it bounds the Lipschitz constant only loosely and biases the critic towards simple
    functions) but the original recipe.

    Args:
        clip_value: c, the bound of every parameter.
    """

    def __init__(self, clip_value: float = 0.01) -> None:
        if not clip_value > 0:
            raise ConfigError(f"WeightClipping.clip_value must be > 0, got {clip_value!r}.")
        self.clip_value = clip_value

    @torch.no_grad()
    def after_step(self, critic: nn.Module) -> None:
        for parameter in critic.parameters():
            parameter.clamp_(-self.clip_value, self.clip_value)


class GradientPenalty(LipschitzStrategy):
    """Gulrajani et al. (2017): ``weight * E[(||grad_x d(x_hat)||_2 - 1)^2]`` on random interpolates
    ``x_hat = eps * real + (1 - eps) * fake``, ``eps ~ U[0, 1]`` per sample.

    The penalty's graph is kept (``create_graph``), so the critic's optimizer step also descends it.

    Args:
        weight: lambda, the penalty's weight (10 in WGAN-GP).
    """

    has_penalty = True

    def __init__(self, weight: float = 10.0) -> None:
        if not weight > 0:
            raise ConfigError(f"GradientPenalty.weight must be > 0, got {weight!r}.")
        self.weight = weight

    def penalty(
        self,
        score: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        rand: Callable[..., Tensor] | None = None,
        batch_dims: int = 1,
        critic: nn.Module | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        if eps is None:
            shape = (*real.shape[:batch_dims], *([1] * (real.dim() - batch_dims)))
            eps = (rand or torch.rand)(*shape, device=real.device, dtype=real.dtype)
        interpolates = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        # Each score depends on its own sample only, so the gradient of the sum is every sample's own gradient.
        (gradients,) = torch.autograd.grad(score(interpolates).sum(), interpolates, create_graph=True)
        norms = gradients.flatten(batch_dims).norm(dim=-1)
        return self.weight * ((norms - 1) ** 2).mean(-1)


class SpectralNormalization(LipschitzStrategy):
    """Miyato et al. (2018), written out: divide each linear layer's weight by its largest singular
    value, estimated by power iteration with a persistent vector per layer.

    The estimate ``u`` (left singular vector) is a buffer of the layer, so it is checkpointed and
    moves with the model. After every critic step (and once in ``prepare``), for each layer::

        repeat n_power_iterations:  v = normalize(W^T u);  u = normalize(W v)
        sigma = u^T W v;            W <- W / sigma          (in place, outside autograd)

    Because ``u`` carries over between steps and each step changes W only a little, one iteration
    per step tracks sigma closely; ``prepare`` runs ``warmup_iterations`` to converge first.

    Args:
        n_power_iterations: Power iterations after each critic step.
        warmup_iterations: Power iterations before the first step.
        eps: Floor of the norms the iteration divides by.
    """

    buffer_name = "spectral_u"

    def __init__(self, n_power_iterations: int = 1, warmup_iterations: int = 50, eps: float = 1e-12) -> None:
        if n_power_iterations < 1 or warmup_iterations < 1:
            raise ConfigError(
                "SpectralNormalization.n_power_iterations and warmup_iterations must be >= 1, "
                f"got {n_power_iterations!r} and {warmup_iterations!r}."
            )
        self.n_power_iterations = n_power_iterations
        self.warmup_iterations = warmup_iterations
        self.eps = eps

    @staticmethod
    def power_iteration(weight: Tensor, u: Tensor, iterations: int, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
        """``iterations`` steps from ``u``; returns (sigma estimate, new u). ``u`` is not modified.
        A population's stacked weights ``(P, out, in)`` and vectors ``(P, out)`` give one sigma per member."""
        u, v = singular_vectors(weight, u, iterations, eps)
        return largest_singular_value(weight, u, v), u

    @torch.no_grad()
    def prepare(self, critic: nn.Module) -> None:
        register_singular_vectors(critic, self.buffer_name, self.eps)
        self.normalize(critic, self.warmup_iterations)

    @torch.no_grad()
    def after_step(self, critic: nn.Module) -> None:
        self.normalize(critic, self.n_power_iterations)

    @torch.no_grad()
    def normalize(self, critic: nn.Module, iterations: int) -> list[Tensor]:
        """Renormalise every linear layer in place; returns the sigma estimates before division."""
        sigmas = []
        for layer in linear_layers(critic):
            sigma, u = self.power_iteration(layer.weight, getattr(layer, self.buffer_name), iterations, self.eps)
            getattr(layer, self.buffer_name).copy_(u)
            layer.weight.div_(sigma if sigma.dim() == 0 else sigma.view(-1, 1, 1))
            sigmas.append(sigma)
        return sigmas


def singular_vectors(weight: Tensor, u: Tensor, iterations: int, eps: float = 1e-12) -> tuple[Tensor, Tensor]:
    """``iterations`` power-iteration steps from ``u``, ``v = normalize(W^T u); u = normalize(W v)``: the
    estimates (u, v) of the top singular vectors; a population's stacked weights ``(P, out, in)`` member by member."""
    for _ in range(iterations):
        if weight.dim() == 3:
            v = F.normalize(torch.bmm(weight.transpose(1, 2), u.unsqueeze(-1)).squeeze(-1), dim=-1, eps=eps)
            u = F.normalize(torch.bmm(weight, v.unsqueeze(-1)).squeeze(-1), dim=-1, eps=eps)
        else:
            v = F.normalize(weight.t() @ u, dim=0, eps=eps)
            u = F.normalize(weight @ v, dim=0, eps=eps)
    return u, v


def largest_singular_value(weight: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``sigma = u^T W v`` (one per member); differentiable in W, with ``d sigma / d W = u v^T``."""
    if weight.dim() == 3:
        return torch.bmm(u.unsqueeze(1), torch.bmm(weight, v.unsqueeze(-1))).reshape(-1)
    return u @ weight @ v


@torch.no_grad()
def register_singular_vectors(critic: nn.Module, buffer_name: str, eps: float) -> None:
    """A random unit vector ``u`` per linear layer, a buffer (checkpointed, moved with the model)."""
    for layer in linear_layers(critic):
        if not hasattr(layer, buffer_name):
            u = F.normalize(torch.randn(layer.out_features, device=layer.weight.device, dtype=layer.weight.dtype), dim=0, eps=eps)
            layer.register_buffer(buffer_name, u)


class SpectralRegularization(LipschitzStrategy):
    """Yoshida & Miyato (2017): instead of dividing the weights by their spectral norms, penalise them,
    adding ``(weight / 2) * sum_l sigma(W_l)^2`` to the critic's loss; sigma by power iteration with a
    persistent vector per layer (the buffer of :class:`SpectralNormalization`). Per critic step::

        repeat n_power_iterations:  v = normalize(W^T u);  u = normalize(W v)      (no gradient)
        penalty = (weight / 2) sum_l (u_l^T W_l v_l)^2,   d penalty / d W_l = weight * sigma_l u_l v_l^T

    The critic is only pushed towards small spectral norms, not held at 1: its Lipschitz constant is what
    the penalty and the Wasserstein gain settle on, so the estimate of W1 is scaled by it.

    Args:
        weight: lambda, the penalty's weight.
        n_power_iterations: Power iterations per critic step.
        warmup_iterations: Power iterations before the first step.
        eps: Floor of the norms the iteration divides by.
    """

    has_penalty = True
    buffer_name = SpectralNormalization.buffer_name

    def __init__(
        self, weight: float = 0.01, n_power_iterations: int = 1, warmup_iterations: int = 50, eps: float = 1e-12
    ) -> None:
        if not weight > 0:
            raise ConfigError(f"SpectralRegularization.weight must be > 0, got {weight!r}.")
        if n_power_iterations < 1 or warmup_iterations < 1:
            raise ConfigError(
                "SpectralRegularization.n_power_iterations and warmup_iterations must be >= 1, "
                f"got {n_power_iterations!r} and {warmup_iterations!r}."
            )
        self.weight = weight
        self.n_power_iterations = n_power_iterations
        self.warmup_iterations = warmup_iterations
        self.eps = eps

    @torch.no_grad()
    def prepare(self, critic: nn.Module) -> None:
        register_singular_vectors(critic, self.buffer_name, self.eps)
        self.update_vectors(critic, self.warmup_iterations)

    @torch.no_grad()
    def update_vectors(self, critic: nn.Module, iterations: int) -> list[Tensor]:
        """Advance every layer's u by ``iterations`` steps; returns each layer's v."""
        vs = []
        for layer in linear_layers(critic):
            u, v = singular_vectors(layer.weight, getattr(layer, self.buffer_name), iterations, self.eps)
            getattr(layer, self.buffer_name).copy_(u)
            vs.append(v)
        return vs

    def penalty(
        self,
        score: Callable[[Tensor], Tensor],
        real: Tensor,
        fake: Tensor,
        rand: Callable[..., Tensor] | None = None,
        batch_dims: int = 1,
        critic: nn.Module | None = None,
    ) -> Tensor:
        if critic is None:
            raise TypeError("SpectralRegularization.penalty needs the critic (critic=...)")
        layers, vs = linear_layers(critic), self.update_vectors(critic, self.n_power_iterations)
        sigmas = [largest_singular_value(layer.weight, getattr(layer, self.buffer_name), v) for layer, v in zip(layers, vs)]
        return self.weight / 2 * torch.stack(sigmas).pow(2).sum(0)


class TorchSpectralNorm(LipschitzStrategy):
    """PyTorch's own ``torch.nn.utils.parametrizations.spectral_norm`` on every linear layer, for
    comparison with :class:`SpectralNormalization`: it reparametrises ``W = W_raw / sigma`` inside
    the forward pass (one power iteration per training forward) instead of renormalising after
    the step.

    Args:
        n_power_iterations: Power iterations per training forward pass.
    """

    def __init__(self, n_power_iterations: int = 1) -> None:
        if n_power_iterations < 1:
            raise ConfigError(f"TorchSpectralNorm.n_power_iterations must be >= 1, got {n_power_iterations!r}.")
        self.n_power_iterations = n_power_iterations

    def prepare(self, critic: nn.Module) -> None:
        for layer in linear_layers(critic):
            torch.nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=self.n_power_iterations)
