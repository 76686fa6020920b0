"""The courses' mathematics as checks, part 1 (docs/theory.md, items 1–6): matrix calculus, binary
cross-entropy, L2 regularisation and weight decay, hyperparameters, ridge regression; against autograd,
torch.linalg and torch.optim, in float64."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.functional import jacobian
from torch.distributions import Bernoulli
from torch.testing import assert_close

from tests.conftest import F64, generator, randn

# 1. The least-squares gradient


def test_least_squares_gradient_is_2XtXw_minus_2Xty():
    g = generator(0)
    X, y, w = randn(g, 20, 3), randn(g, 20), randn(g, 3).requires_grad_()
    (gradient,) = torch.autograd.grad((X @ w - y).pow(2).sum(), w)
    assert_close(gradient, 2 * X.T @ X @ w - 2 * X.T @ y, rtol=1e-12, atol=1e-12)
    solution = torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1)  # where the gradient vanishes
    assert_close(2 * X.T @ X @ solution - 2 * X.T @ y, torch.zeros(3, dtype=F64), rtol=0, atol=1e-12)


# 2. Matrix derivatives


def test_gradient_of_xtx_is_2x():
    x = randn(generator(1), 4).requires_grad_()
    assert_close(torch.autograd.grad(x @ x, x)[0], 2 * x, rtol=1e-15, atol=0)


def test_gradient_of_trace_AtA_is_2A():
    A = randn(generator(2), 3, 4).requires_grad_()
    assert_close(torch.autograd.grad(torch.trace(A.T @ A), A)[0], 2 * A, rtol=1e-15, atol=0)


def test_gradient_of_xtAy_with_respect_to_y_is_Atx():
    g = generator(3)
    x, A, y = randn(g, 3), randn(g, 3, 4), randn(g, 4).requires_grad_()
    assert_close(torch.autograd.grad(x @ A @ y, y)[0], A.T @ x, rtol=1e-15, atol=1e-15)


def test_jacobian_of_Ay_is_A_in_numerator_layout():
    g = generator(4)
    A, y = randn(g, 3, 4), randn(g, 4)
    J = jacobian(lambda v: A @ v, y)  # J[i, j] = ∂(Ay)_i / ∂y_j: one row per output
    assert J.shape == (3, 4)  # the denominator layout (the homework's) is its transpose, Aᵀ: 4 × 3
    assert_close(J, A, rtol=0, atol=0)


# 3. Binary cross-entropy


def test_binary_cross_entropy_is_the_bernoulli_negative_log_likelihood():
    g = generator(5)
    logits = 3 * randn(g, 50)
    labels = torch.randint(0, 2, (50,), generator=g).to(F64)
    p = torch.sigmoid(logits)
    nll = -torch.log(p.pow(labels) * (1 - p).pow(1 - labels))
    for loss in (
        F.binary_cross_entropy(p, labels, reduction="none"),
        F.binary_cross_entropy_with_logits(logits, labels, reduction="none"),
        -Bernoulli(probs=p).log_prob(labels),
        -Bernoulli(logits=logits).log_prob(labels),
    ):
        assert_close(loss, nll, rtol=1e-10, atol=1e-12)
    likelihood = torch.prod(p.pow(labels) * (1 - p).pow(1 - labels))  # of the whole i.i.d. label set
    assert_close(F.binary_cross_entropy(p, labels), -likelihood.log() / 50, rtol=1e-12, atol=0)


def test_binary_cross_entropy_gradient_in_the_logit_is_prediction_minus_label():
    g = generator(6)
    logits, labels = randn(g, 50).requires_grad_(), torch.randint(0, 2, (50,), generator=g).to(F64)
    (gradient,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"), logits)
    assert_close(gradient, torch.sigmoid(logits) - labels, rtol=1e-12, atol=1e-15)


# 4. L2 regularisation and weight decay


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)


def regression_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(7)
    X = randn(g, n, 3)
    return X, torch.sin(X.sum(1, keepdim=True)) + 0.1 * randn(g, n, 1)


def squared_norm(model: nn.Module) -> torch.Tensor:
    return sum(p.pow(2).sum() for p in model.parameters())


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, lam: float = 0.0, batch: int = 16) -> torch.Tensor:
    """``steps`` minibatch steps on the mean squared error + ``lam``·‖θ‖²; returns the flat parameters."""
    X, y = regression_data()
    for step in range(steps):
        rows = slice(step * batch % len(X), step * batch % len(X) + batch)
        optimizer.zero_grad()
        (F.mse_loss(model(X[rows]), y[rows]) + lam * squared_norm(model)).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_on_an_l2_penalised_loss_is_sgd_with_weight_decay_two_lambda(momentum):
    lam, lr = 0.01, 0.1
    penalised, decayed = small_network(), small_network()
    on_penalty = train(penalised, torch.optim.SGD(penalised.parameters(), lr=lr, momentum=momentum), steps=20, lam=lam)
    by_decay = train(decayed, torch.optim.SGD(decayed.parameters(), lr=lr, momentum=momentum, weight_decay=2 * lam), steps=20)
    assert_close(on_penalty, by_decay, rtol=0, atol=1e-12)


def test_pure_weight_decay_shrinks_an_epoch_by_a_factor_tending_to_exp_minus_eta_lambda_over_m():
    eta, lam, m = 0.5, 5.0, 10  # C = (1/n)·Σ C_x + (λ/2n)·‖w‖², minibatches of m, n/m steps an epoch
    limit = math.exp(-eta * lam / m)
    for n in (100, 1_000, 10_000):
        w = torch.ones(1, dtype=F64, requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=eta, weight_decay=lam / n)
        for _ in range(n // m):
            w.grad = torch.zeros_like(w)  # no data gradient: only the decay acts
            optimizer.step()
        assert w.item() == pytest.approx((1 - eta * lam / n) ** (n // m), rel=1e-12)
        # log((1 − a/n)^(n/m)) = −a/m − a²/(2nm) − …: the gap to the limit closes like 1/n
        assert limit - w.item() == pytest.approx(limit * (eta * lam) ** 2 / (2 * n * m), rel=2 / n)


def test_adam_weight_decay_is_an_l2_penalty_and_not_adamw():
    wd = 0.01
    models = [small_network() for _ in range(4)]
    adam_l2 = train(models[0], torch.optim.Adam(models[0].parameters(), lr=0.01, weight_decay=wd), steps=100)
    adam_on_penalty = train(models[1], torch.optim.Adam(models[1].parameters(), lr=0.01), steps=100, lam=wd / 2)
    adamw = train(models[2], torch.optim.AdamW(models[2].parameters(), lr=0.01, weight_decay=wd), steps=100)
    adam_plain = train(models[3], torch.optim.Adam(models[3].parameters(), lr=0.01), steps=100)
    assert_close(adam_l2, adam_on_penalty, rtol=0, atol=1e-12)
    assert (adam_l2 - adamw).norm() / adamw.norm() > 0.1  # measured 0.21: the L2 gradient is divided by √v̂ too
    assert (adamw - adam_plain).norm() / adamw.norm() < 0.01  # measured 0.007: decoupled decay is lr·wd = 1e-4 a step
    assert adam_l2.norm() < adamw.norm()


def test_adam_l2_decay_moves_each_weight_by_about_the_learning_rate_whatever_lambda_and_adamw_decays_geometrically():
    lr, steps, start = 0.01, 50, torch.tensor([1.0, 10.0], dtype=F64)

    def decay_only(optimizer_class, lam: float) -> torch.Tensor:
        w = start.clone().requires_grad_()
        optimizer = optimizer_class([w], lr=lr, weight_decay=lam)
        for _ in range(steps):
            w.grad = torch.zeros_like(w)
            optimizer.step()
        return w.detach()

    for lam in (0.1, 10.0):
        moved = start - decay_only(torch.optim.Adam, lam)
        assert_close(moved, start - decay_only(torch.optim.Adam, 1.0), rtol=1e-5, atol=0)  # λ cancels in m̂/√v̂
        assert (moved > 0.9 * lr * steps).all() and (moved < lr * steps).all()
        assert_close(decay_only(torch.optim.AdamW, lam), start * (1 - lr * lam) ** steps, rtol=1e-12, atol=0)


# 5. Hyperparameters are not learned on the training loss


def linear_regression(seed: int, n: int, d: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    X = randn(g, n, d)
    return X, X @ (0.5 * randn(g, d)) + noise * randn(g, n)


def test_gradient_descent_on_lambda_drives_it_down_without_bound():
    X, y = linear_regression(8, n=50, d=3, noise=0.3)
    unregularised_minimum = (X @ torch.linalg.lstsq(X, y.unsqueeze(1)).solution.squeeze(1) - y).pow(2).mean()
    w, lam = randn(generator(9), 3).requires_grad_(), torch.tensor(0.5, dtype=F64, requires_grad=True)
    lambdas, costs = [], []
    for _ in range(200):
        cost = (X @ w - y).pow(2).mean() + lam * (w @ w)
        w_gradient, lam_gradient = torch.autograd.grad(cost, (w, lam))
        assert lam_gradient == w @ w  # ∂C/∂λ = wᵀw ≥ 0: the descent step on λ is never upwards
        lambdas.append(lam.item())
        costs.append(cost.item())
        if cost < -1e6:
            break
        with torch.no_grad():
            w -= 0.05 * w_gradient
            lam -= 0.05 * lam_gradient
    assert all(later < earlier for earlier, later in itertools.pairwise(lambdas))
    assert min(costs) < unregularised_minimum.item()
    assert costs[-1] < -1e6  # within 200 steps: C is unbounded below once λ < −λ_min(XᵀX/n)
    assert lambdas[-1] < -torch.linalg.eigvalsh(X.T @ X / len(X)).min()


def test_training_loss_prefers_no_regularisation_and_held_out_loss_a_positive_lambda():
    X, y = linear_regression(10, n=1030, d=20, noise=1.0)
    (X_train, X_held_out), (y_train, y_held_out) = X.split([30, 1000]), y.split([30, 1000])
    lambdas = [0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    train_losses, held_out_losses = [], []
    for lam in lambdas:
        w = torch.linalg.solve(X_train.T @ X_train + 30 * lam * torch.eye(20, dtype=F64), X_train.T @ y_train)
        train_losses.append((X_train @ w - y_train).pow(2).mean().item())
        held_out_losses.append((X_held_out @ w - y_held_out).pow(2).mean().item())
    assert all(later > earlier for earlier, later in itertools.pairwise(train_losses))
    assert 0 < lambdas[held_out_losses.index(min(held_out_losses))] < lambdas[-1]


# 6. Ridge regression with an unpenalised bias


def design(seed: int = 11, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Z = [1, X] and y = 2 + X·w + noise."""
    g = generator(seed)
    X = randn(g, n, 3)
    y = 2 + X @ torch.tensor([1.0, -2.0, 0.5], dtype=F64) + 0.3 * randn(g, n)
    return torch.cat([torch.ones(n, 1, dtype=F64), X], dim=1), y


def ridge(Z: torch.Tensor, y: torch.Tensor, lam: float, scale: float, penalise_bias: bool = False) -> torch.Tensor:
    """β = (ZᵀZ + scale·λ·A)⁻¹ Zᵀy with A = diag(0, 1, …, 1) (or I when the bias is penalised)."""
    A = torch.eye(Z.shape[1], dtype=F64)
    A[0, 0] = float(penalise_bias)
    return torch.linalg.solve(Z.T @ Z + scale * lam * A, Z.T @ y)


@pytest.mark.parametrize("averaged", [True, False], ids=["mean_squared_error", "sum_of_squares"])
def test_ridge_with_an_unpenalised_bias_minimises_its_objective(averaged):
    Z, y = design()
    lam, scale = 0.1, len(y) if averaged else 1

    def objective(beta):  # (1/n)·‖y − Zβ‖² + λ‖β_{1:}‖², or without the 1/n
        return (y - Z @ beta).pow(2).sum() / scale + lam * beta[1:].pow(2).sum()

    A = torch.diag(torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=F64))
    step = 1 / torch.linalg.eigvalsh(2 * (Z.T @ Z / scale + lam * A)).max()  # 1 / smoothness
    beta = torch.zeros(4, dtype=F64, requires_grad=True)
    for _ in range(500):
        (gradient,) = torch.autograd.grad(objective(beta), beta)
        with torch.no_grad():
            beta -= step * gradient
    assert_close(beta.detach(), ridge(Z, y, lam, scale), rtol=0, atol=1e-6)


def test_ridge_at_lambda_zero_is_least_squares():
    Z, y = design()
    assert_close(ridge(Z, y, 0.0, len(y)), torch.linalg.lstsq(Z, y.unsqueeze(1)).solution.squeeze(1), rtol=0, atol=1e-10)


def test_shifting_y_shifts_only_the_unpenalised_bias():
    Z, y = design()
    shift = torch.tensor([5.0, 0.0, 0.0, 0.0], dtype=F64)
    assert_close(ridge(Z, y + 5, 0.1, len(y)) - ridge(Z, y, 0.1, len(y)), shift, rtol=0, atol=1e-10)
    penalised_bias = ridge(Z, y + 5, 0.1, len(y), penalise_bias=True) - ridge(Z, y, 0.1, len(y), penalise_bias=True)
    assert penalised_bias[0] < 5 - 0.1 and penalised_bias[1:].abs().max() > 1e-3  # the slopes move too


def test_ridge_bias_is_mean_y_minus_mean_x_times_the_slopes_fitted_on_centred_data():
    Z, y = design()
    lam, n = 0.1, len(y)
    X = Z[:, 1:]
    centred = X - X.mean(0)
    slopes = torch.linalg.solve(centred.T @ centred + n * lam * torch.eye(3, dtype=F64), centred.T @ (y - y.mean()))
    assert_close(ridge(Z, y, lam, n), torch.cat([(y.mean() - X.mean(0) @ slopes).unsqueeze(0), slopes]), rtol=0, atol=1e-10)
