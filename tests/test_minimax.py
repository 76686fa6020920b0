"""Minimax dynamics on f(x, y) = (x - 1)(y - 1) against their exact rates."""

import math

import pytest
import torch

from lightning_modules.components.minimax import distance_to_saddle, trajectory


@pytest.mark.parametrize("gamma", [0.01, 0.1, 0.5, 1.0, 2.0])
def test_simultaneous_gda_distance_grows_by_exactly_sqrt_one_plus_gamma_squared(gamma):
    distances = distance_to_saddle(trajectory("simultaneous", (0.0, 0.0), gamma, steps=50))
    ratios = distances[1:] / distances[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, math.sqrt(1 + gamma**2)), rtol=1e-9, atol=0)
    assert distances[-1] > distances[0]  # diverges for every gamma > 0


@pytest.mark.parametrize("gamma", [0.05, 0.2, 0.5])
def test_extragradient_converges_at_its_rate(gamma):
    distances = distance_to_saddle(trajectory("extragradient", (0.0, 0.0), gamma, steps=50))
    ratios = distances[1:] / distances[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, math.sqrt(1 - gamma**2 + gamma**4)), rtol=1e-9, atol=0)
    assert (ratios < 1).all()  # strictly closer to the saddle at every step


def test_optimistic_gda_converges_and_alternating_gda_stays_bounded():
    optimistic = distance_to_saddle(trajectory("optimistic", (0.0, 0.0), 0.2, steps=400))
    alternating = distance_to_saddle(trajectory("alternating", (0.0, 0.0), 0.2, steps=400))
    assert optimistic[-1] < 1e-3 * optimistic[0]
    assert alternating.max() < 1.2 * alternating[0] and alternating.min() > 0.8 * alternating[0]


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'adam'"):
        trajectory("adam", (0.0, 0.0), 0.1, steps=1)


def test_command_prints_the_measured_rates_and_writes_the_figure(tmp_path, capsys):
    from lightning_modules.components.minimax import main

    main(["--gamma", "0.2", "--steps", "40", "--start", "2", "0.5", "--out", str(tmp_path / "minimax.png")])
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:5]}
    assert float(rows["simultaneous"][2]) == pytest.approx(math.sqrt(1 + 0.2**2), rel=1e-6) == float(rows["simultaneous"][3])
    assert float(rows["extragradient"][2]) < 1
    assert (tmp_path / "minimax.png").stat().st_size > 10_000
