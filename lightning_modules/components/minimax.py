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
bound, but not by a constant factor: |(x, y)| = |(u, v) + (1, 1)| oscillates around the growing spiral.
"""

from __future__ import annotations

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
