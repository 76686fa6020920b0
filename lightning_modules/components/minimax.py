"""First-order dynamics on the bilinear game f(x, y) = (x - 1)(y - 1), min over x, max over y.

The saddle point is (1, 1). With u = x - 1, v = y - 1 and step size gamma, one step of each method
is a linear map of (u, v), so its behaviour is exact:

- simultaneous GDA   u' = u - g v,               v' = v + g u:        |(u', v')| = sqrt(1 + g^2) |(u, v)|
  (spirals out: diverges for every g > 0);
- alternating GDA    u' = u - g v,               v' = v + g u':       determinant 1 (orbits, neither
  converges nor diverges for g < 2);
- extragradient      gradient at the extrapolated point:              |(u', v')| = sqrt(1 - g^2 + g^4) |(u, v)|
  (converges for 0 < g < 1);
- optimistic GDA     x_{t+1} = x_t - 2 g grad_t + g grad_{t-1} (and + for y): converges for small g.

Measured from the origin instead of the saddle, |(x, y)| of simultaneous GDA also grows without
bound, but not by a constant factor: |(x, y)| = |(u, v) + (1, 1)|, so its step ratio oscillates
around sqrt(1 + g^2) as the spiral turns (below 1 on the steps that pass nearest the origin) and
tends to it only as |(u, v)| >> |(1, 1)|. The factor is exact about the origin only for f = xy.

The command draws the four trajectories from one start and prints each method's measured rate::

    python -m lightning_modules.components.minimax --gamma 0.1 --steps 300 --out docs/figures/minimax.png
"""

from __future__ import annotations

import argparse
import math
from typing import Literal

import torch
from torch import Tensor

Method = Literal["simultaneous", "alternating", "extragradient", "optimistic"]
SADDLE = (1.0, 1.0)


def gradient(point: Tensor) -> Tensor:
    """(df/dx, df/dy) of f(x, y) = (x - 1)(y - 1)."""
    x, y = point
    return torch.stack([y - 1, x - 1])


def descent_ascent(point: Tensor, direction: Tensor, gamma: float) -> Tensor:
    """x descends, y ascends."""
    return point + gamma * torch.stack([-direction[0], direction[1]])


def trajectory(method: Method, start: tuple[float, float], gamma: float, steps: int) -> Tensor:
    """``(steps + 1, 2)`` float64 iterates of ``method`` from ``start``."""
    points = [torch.tensor(start, dtype=torch.float64)]
    previous_gradient = gradient(points[0])
    for _ in range(steps):
        point = points[-1]
        if method == "simultaneous":
            new = descent_ascent(point, gradient(point), gamma)
        elif method == "alternating":
            x = point[0] - gamma * gradient(point)[0]
            new = torch.stack([x, point[1] + gamma * gradient(torch.stack([x, point[1]]))[1]])
        elif method == "extragradient":
            new = descent_ascent(point, gradient(descent_ascent(point, gradient(point), gamma)), gamma)
        elif method == "optimistic":
            current = gradient(point)
            new = descent_ascent(point, 2 * current - previous_gradient, gamma)
            previous_gradient = current
        else:
            raise ValueError(f"unknown method {method!r}; choose from {Method.__args__}")
        points.append(new)
    return torch.stack(points)


def distance_to_saddle(points: Tensor) -> Tensor:
    return (points - torch.tensor(SADDLE, dtype=points.dtype)).norm(dim=-1)


def distance_to_origin(points: Tensor) -> Tensor:
    return points.norm(dim=-1)


def rate(distances: Tensor) -> float:
    """Geometric mean of the per-step distance ratio over the second half of a run."""
    half = len(distances) // 2
    return float((distances[-1] / distances[half]) ** (1 / (len(distances) - 1 - half)))


def plot(trajectories: dict[str, Tensor], gamma: float, path: str) -> None:
    """Trajectories in the plane, distance to the saddle and to the origin vs step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    plane, saddle, origin = figure.subplots(1, 3)
    for method, points in trajectories.items():
        (line,) = plane.plot(*points.T, lw=1, label=method)
        plane.plot(*points[0], "o", color=line.get_color())
        saddle.plot(distance_to_saddle(points), label=method)
        origin.plot(distance_to_origin(points), label=method)
    plane.plot(*SADDLE, "k*", markersize=12, label="saddle (1, 1)")
    plane.set(xlabel="x (min)", ylabel="y (max)", title=f"f(x, y) = (x - 1)(y - 1), gamma = {gamma}", aspect="equal")
    saddle.set(xlabel="step", ylabel="|(x, y) - (1, 1)|", yscale="log", title="distance to the saddle")
    origin.set(xlabel="step", ylabel="|(x, y)|", yscale="log", title="distance to the origin")
    for axes in (plane, saddle, origin):
        axes.grid(alpha=0.3)
    plane.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Minimax dynamics on f(x, y) = (x - 1)(y - 1): trajectories and rates.")
    parser.add_argument("--gamma", type=float, default=0.1, help="step size (default 0.1)")
    parser.add_argument("--steps", type=int, default=300, help="iterations (default 300)")
    parser.add_argument("--start", type=float, nargs=2, default=(0.0, 0.0), metavar=("X", "Y"), help="start (default 0 0)")
    parser.add_argument("--out", default="minimax.png", help="figure path (default minimax.png)")
    options = parser.parse_args(args)
    if not options.gamma > 0 or options.steps < 2:
        parser.error("--gamma must be > 0 and --steps >= 2")
    trajectories = {method: trajectory(method, tuple(options.start), options.gamma, options.steps) for method in Method.__args__}
    g = options.gamma
    exact = {"simultaneous": math.sqrt(1 + g**2), "extragradient": math.sqrt(1 - g**2 + g**4)}
    print(f"{'method':<14} {'|z - saddle| end':>17} {'rate (saddle)':>14} {'exact':>9} {'rate (origin)':>14}")
    for method, points in trajectories.items():
        to_saddle = distance_to_saddle(points)
        exact_rate = f"{exact[method]:.6f}" if method in exact else "-"
        print(
            f"{method:<14} {to_saddle[-1]:>17.4g} {rate(to_saddle):>14.6f} {exact_rate:>9} "
            f"{rate(distance_to_origin(points)):>14.6f}"
        )
    plot(trajectories, g, options.out)
    print(f"figure: {options.out}")


if __name__ == "__main__":
    main()
