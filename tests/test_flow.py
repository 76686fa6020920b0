"""The normalizing flow: invertible, its log-determinant autograd's, its density a density, the change of variables of
the homework (U = X + Y, V = X - Y) reproduced, the image likelihood against torch.distributions, training and resume."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch.distributions import AffineTransform, Normal, SigmoidTransform, TransformedDistribution

from callbacks import CriticLandscape, EpochSeed, MixtureMetrics
from callbacks.mixture import colour_range
from core.errors import ConfigError
from datamodules import Ring8DataModule
from lightning_modules import Flow
from lightning_modules.components.flow_layers import ActNorm, FlowSequence, InvertibleLinear
from lightning_modules.components.latents import standard_normal_log_prob

VECTOR_FLOW = {"sample_shape": (2,), "couplings": 4, "hidden": (16,), "mixing": True}
IMAGE_FLOW = {"sample_shape": (1, 4, 4), "couplings": 2, "hidden": (4,), "mixing": True}


def perturbed(flow: Flow, seed: int = 0, size: float = 0.1) -> Flow:
    """A flow away from the identity its zero-initialised conditioners start at, its ActNorms initialised."""
    torch.manual_seed(seed)
    flow = flow.double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(size * torch.randn_like(parameter))
        for buffer_name, buffer in flow.named_buffers():
            if buffer_name.endswith("initialised"):
                buffer.fill_(True)
    return flow.eval()


@pytest.mark.parametrize("settings", [VECTOR_FLOW, IMAGE_FLOW], ids=["vectors", "images"])
def test_the_inverse_undoes_the_forward_map(settings):
    flow = perturbed(Flow(**settings))
    x = torch.randn(8, *settings["sample_shape"], dtype=torch.float64)
    z, _ = flow.flow(x)
    assert z.shape == (8, *flow.latent_shape) and not torch.allclose(z.flatten(1), x.flatten(1))
    torch.testing.assert_close(flow.flow.inverse(z), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("settings", [VECTOR_FLOW, IMAGE_FLOW], ids=["2-D", "4x4 image"])
def test_the_log_determinant_is_that_of_the_autograd_jacobian(settings):
    flow = perturbed(Flow(**settings))
    shape = settings["sample_shape"]
    for x in torch.randn(3, *shape, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow.flow(v.reshape(1, *shape))[0].flatten(), x.flatten())
        _, log_det = flow.flow(x.unsqueeze(0))
        torch.testing.assert_close(log_det[0], torch.linalg.slogdet(jacobian)[1], rtol=1e-10, atol=1e-10)


def test_the_density_integrates_to_one_over_the_plane():
    flow = perturbed(Flow(**VECTOR_FLOW), size=0.05)
    step = 0.02
    axis = torch.arange(-8.0, 8.0, step, dtype=torch.float64) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        mass = torch.cat([flow.log_prob(chunk).exp() for chunk in grid.split(65_536)]).sum() * step**2
    assert mass.item() == pytest.approx(1.0, rel=0.01)


def test_a_linear_flow_is_the_homeworks_change_of_variables():
    """X, Y ~ N(0, 1) independent, U = X + Y, V = X - Y: a flow from (u, v) to z = (x, y) = ((u + v) / 2, (u - v) / 2)
    gives p(u, v) = N(x) N(y) |det| = N(u; 0, 2) N(v; 0, 2), the closed form of the homework."""
    to_latent = FlowSequence([InvertibleLinear(2, weight=torch.tensor([[0.5, 0.5], [0.5, -0.5]], dtype=torch.float64))])
    uv = torch.randn(100, 2, dtype=torch.float64) * 3
    z, log_det = to_latent(uv)
    closed_form = Normal(torch.tensor(0.0, dtype=torch.float64), math.sqrt(2.0)).log_prob(uv).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(z) + log_det, closed_form, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(to_latent.inverse(z), uv)  # u = x + y, v = x - y


def test_an_image_likelihood_is_the_logit_normal_density_of_the_dequantised_pixels_plus_d_log_256():
    """With every coupling at its initial identity, log p(x~) is that of x~ = (sigmoid(y) - alpha) / (1 - 2 alpha),
    y ~ N(0, I), by torch.distributions; the 256-level NLL adds D log 256, bits/dim divide by D ln 2."""
    flow = Flow(**IMAGE_FLOW, actnorm=False).double()
    flow.flow.layers = torch.nn.ModuleList([layer for layer in flow.flow.layers if not hasattr(layer, "weight")])
    images = torch.randint(0, 256, (5, 1, 4, 4)).double() / 255
    torch.manual_seed(3)
    log_p = flow.log_prob(images)
    torch.manual_seed(3)
    dequantised = (images * 255 + torch.rand_like(images)) / 256
    alpha = 0.05
    logit_normal = TransformedDistribution(
        Normal(torch.tensor(0.0, dtype=torch.float64), 1.0),
        [SigmoidTransform(), AffineTransform(-alpha / (1 - 2 * alpha), 1 / (1 - 2 * alpha))],
    )
    torch.testing.assert_close(log_p, logit_normal.log_prob(dequantised).flatten(1).sum(1), rtol=1e-10, atol=1e-10)
    torch.manual_seed(3)
    metrics = flow.metrics(images)
    assert metrics["nll"].item() == pytest.approx(-log_p.mean().item() + 16 * math.log(256), rel=1e-12)
    assert metrics["bits_per_dim"].item() == pytest.approx(metrics["nll"].item() / (16 * math.log(2)), rel=1e-12)


def ring8() -> Ring8DataModule:
    return Ring8DataModule(num_samples=1024, batch_size=128)


def test_a_flow_learns_the_ring_and_is_measured_like_the_wgan(fit_tiny, tmp_path):
    metrics, landscape = MixtureMetrics(every_n_iterations=40, num_samples=500), CriticLandscape(iterations=[40], resolution=20)
    trainer, flow = fit_tiny(
        partial(Flow, **VECTOR_FLOW, lr=1e-2),
        ring8(),
        max_epochs=10,
        callbacks=[EpochSeed(), metrics, landscape],
        default_root_dir=tmp_path,
    )
    assert [snap["iteration"] for snap in landscape.snapshots] == [40, 80] and landscape.snapshots[0]["label"] == "log density"
    final_values = landscape.snapshots[-1]["critic"]  # colours: the top 30 nats, whatever the far tail reaches
    top = final_values.max().item()
    assert colour_range(final_values, landscape.snapshots[-1]["span"]) == {"vmin": top - 30.0, "vmax": top}
    grid_point = torch.tensor([[landscape.snapshots[-1]["bounds"][0][0].item(), landscape.snapshots[-1]["bounds"][0][1].item()]])
    with torch.no_grad():  # the figure's first cell is the flow's log density at the view's lower left corner
        assert landscape.snapshots[-1]["critic"][0, 0].item() == pytest.approx(flow.eval().log_prob(grid_point).item(), rel=1e-5)
    iterations = [iteration for iteration, _ in metrics.history["modes"]]
    assert iterations == [40, 80] and trainer.global_step == 80  # in optimizer steps: a flow has no critic
    untrained = Flow(**VECTOR_FLOW)
    points = ring8().sample(1024, 0)[0]
    untrained.metrics(points)  # ActNorm initialised from the data: the start of training
    with torch.no_grad():
        before, after = untrained.metrics(points)["nll"], flow.metrics(points)["nll"]
    assert after < before - 1.0, (before, after)
    samples = flow.generate(flow.sample_latent(500), None)
    assert samples.shape == (500, 2) and torch.isfinite(samples).all()


def test_resuming_a_flow_ends_with_the_uninterrupted_weights(fit_tiny, tmp_path):
    model = partial(Flow, **VECTOR_FLOW)
    _, straight = fit_tiny(model, ring8(), max_epochs=2, callbacks=[EpochSeed()], default_root_dir=tmp_path / "a")
    trainer, _ = fit_tiny(model, ring8(), max_epochs=1, callbacks=[EpochSeed()], default_root_dir=tmp_path / "b")
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    _, resumed = fit_tiny(
        model, ring8(), max_epochs=2, ckpt_path=tmp_path / "mid.ckpt", callbacks=[EpochSeed()], default_root_dir=tmp_path / "c"
    )
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"couplings": 0}, "model.couplings must be an integer >= 1"),
        ({"sample_shape": (1, 4, 4), "squeeze": False}, "a channel coupling splits the channels in halves"),
        ({"sample_shape": (1, 5, 4)}, "model.squeeze needs an even image height and width"),
        ({"sample_shape": (28, 28)}, "a flow models vectors"),
        ({"logit_alpha": 0.5}, "model.logit_alpha must be in"),
    ],
)
def test_a_bad_flow_setting_is_one_line_naming_it(settings, message):
    with pytest.raises(ConfigError, match=message):
        Flow(**settings)


@pytest.mark.parametrize("shape", [(300, 3), (50, 2, 5, 5)], ids=["vectors", "images"])
def test_actnorm_standardises_each_feature_of_its_first_batch_and_then_stays(shape):
    norm = ActNorm(shape[1], len(shape) - 2).double()
    first = 3 + 2 * torch.randn(shape, dtype=torch.float64)
    y, log_det = norm(first)
    dims = [0, *range(2, len(shape))]
    torch.testing.assert_close(y.mean(dim=dims), torch.zeros(shape[1], dtype=torch.float64))
    torch.testing.assert_close(y.std(dim=dims), torch.ones(shape[1], dtype=torch.float64))
    torch.testing.assert_close(log_det, -first.std(dim=dims).log().sum().expand(shape[0]) * math.prod(shape[2:]))
    assert norm(first)[0].equal(y)  # initialised once: the same map for the next batch
