"""The hand-written optimizers against torch.optim, a float64 reference of the course's AMSGrad, and
checkpoints: 100 steps of the study's network on real MNIST batches."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from core.errors import ConfigError
from datamodules import MNISTDataModule
from lightning_modules.components.mlp import MLPClassifier
from lightning_modules.components.optimizers import SGD, Adam, AMSGrad, HeavyBall, RMSProp
from tests.conftest import require_real

STEPS = 100


@pytest.fixture(scope="module")
def mnist_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """100 minibatches of 64 real MNIST images, standardised as the study feeds them."""
    datamodule = MNISTDataModule(
        data_dir=str(require_real("MNIST/raw/train-images-idx3-ubyte")), batch_size=64, normalization="mean_std", val_size=0
    )
    datamodule.setup("fit")
    images, labels = datamodule.split_tensors("train")
    return [(datamodule.normalize(images[i : i + 64]), labels[i : i + 64]) for i in range(0, 64 * STEPS, 64)]


@pytest.fixture(scope="module")
def network() -> MLPClassifier:
    torch.manual_seed(0)
    return MLPClassifier((1, 28, 28), 10)


def train(network: MLPClassifier, make_optimizer, batches, each_step=None) -> torch.Tensor:
    """A copy of ``network`` after one step per batch; its parameters, flattened."""
    network = copy.deepcopy(network)
    optimizer = make_optimizer(network.parameters())
    for images, labels in batches:
        optimizer.zero_grad()
        F.cross_entropy(network(images), labels).backward()
        if each_step is not None:
            each_step(network)
        optimizer.step()
    return torch.cat([parameter.detach().flatten() for parameter in network.parameters()])


@pytest.mark.parametrize(
    "hand_written, reference",
    [
        (partial(SGD, lr=0.1), partial(torch.optim.SGD, lr=0.1)),
        (partial(HeavyBall, lr=0.01, momentum=0.9), partial(torch.optim.SGD, lr=0.01, momentum=0.9, dampening=0)),
        (partial(RMSProp, lr=1e-3, decay=0.9, eps=1e-8), partial(torch.optim.RMSprop, lr=1e-3, alpha=0.9, eps=1e-8)),
        (partial(Adam, lr=1e-3, betas=(0.8, 0.99), eps=1e-7), partial(torch.optim.Adam, lr=1e-3, betas=(0.8, 0.99), eps=1e-7)),
    ],
    ids=["sgd", "heavy_ball", "rmsprop", "adam"],
)
def test_each_rule_equals_its_torch_optim_counterpart_over_100_steps(network, mnist_batches, hand_written, reference):
    ours, theirs = train(network, hand_written, mnist_batches), train(network, reference, mnist_batches)
    assert (ours - theirs).abs().max() <= 1e-6
    assert (ours - train(network, lambda p: SGD(p, lr=0.0), mnist_batches)).abs().max() > 1e-3  # it did train


class Float64AMSGrad:
    """The course's pseudo-code, line by line, in float64, fed the gradients the network sees."""

    def __init__(self, parameters, lr, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
        self.theta = [p.detach().double().clone() for p in parameters]
        self.m1 = [torch.zeros_like(t) for t in self.theta]
        self.m2 = [torch.zeros_like(t) for t in self.theta]
        self.m2_max = [torch.zeros_like(t) for t in self.theta]
        self.lr, self.beta1, self.beta2, self.eps, self.t = lr, beta1, beta2, eps, 0

    def step(self, gradients) -> None:
        for i, g in enumerate(gradients):
            g = g.double()
            self.m1[i] = self.beta1 * self.m1[i] + (1 - self.beta1) * g
            self.m2[i] = self.beta2 * self.m2[i] + (1 - self.beta2) * g * g
            m1_hat = self.m1[i] / (1 - self.beta1 ** (self.t + 1))
            m2_hat = self.m2[i] / (1 - self.beta2 ** (self.t + 1))
            self.m2_max[i] = torch.maximum(self.m2_max[i], m2_hat)
            self.theta[i] = self.theta[i] - self.lr * m1_hat / (self.eps + self.m2_max[i].sqrt())
        self.t += 1


def test_amsgrad_follows_a_float64_reference_of_the_pseudo_code(network, mnist_batches):
    reference = Float64AMSGrad(network.parameters(), lr=1e-3)
    ours = train(
        network,
        partial(AMSGrad, lr=1e-3),
        mnist_batches,
        each_step=lambda net: reference.step([p.grad for p in net.parameters()]),
    )
    assert (ours.double() - torch.cat([t.flatten() for t in reference.theta])).abs().max() <= 1e-6


def test_torch_amsgrad_is_another_algorithm_whose_steps_are_never_smaller(network, mnist_batches):
    """torch keeps max(m₂) of the *uncorrected* moment and corrects it by this step's factor; the
    course keeps max(m̂₂) of each step's corrected one. Corrections shrink toward 1, so the course's
    maximum is never below torch's: on the same gradients its steps are never larger."""
    ours_net, torch_net = copy.deepcopy(network), copy.deepcopy(network)
    ours, theirs = AMSGrad(ours_net.parameters(), lr=1e-3), torch.optim.Adam(torch_net.parameters(), lr=1e-3, amsgrad=True)
    step_ratios = []
    for t, (images, labels) in enumerate(mnist_batches, start=1):
        F.cross_entropy(network(images), labels).backward()  # one gradient sequence for both
        for source, a, b in zip(network.parameters(), ours_net.parameters(), torch_net.parameters()):
            a.grad, b.grad = source.grad.clone(), source.grad.clone()
            source.grad = None
        ours.step()
        theirs.step()
        our_max = torch.cat([ours.state[p]["max_exp_avg_sq"].flatten() for p in ours_net.parameters()])
        their_max = torch.cat([theirs.state[p]["max_exp_avg_sq"].flatten() for p in torch_net.parameters()]) / (1 - 0.999**t)
        assert (our_max >= their_max * (1 - 1e-5)).all()
        moving = their_max > 1e-12
        step_ratios.append((their_max[moving] / our_max[moving]).sqrt().median().item())  # ≈ our step / torch's step
    assert step_ratios[0] == pytest.approx(1.0, abs=1e-5)  # step 1: both maxima are the first corrected moment
    assert step_ratios[-1] < 0.9  # by step 100 the course's steps are clearly smaller (docs/optimizers.md)


def test_optimizer_state_survives_a_checkpoint_and_resumes_exactly(network, mnist_batches, tmp_path):
    straight = train(network, partial(AMSGrad, lr=1e-3), mnist_batches)
    resumed_net = copy.deepcopy(network)
    optimizer = AMSGrad(resumed_net.parameters(), lr=1e-3)
    for step, (images, labels) in enumerate(mnist_batches):
        if step == STEPS // 2:
            torch.save({"network": resumed_net.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "mid.pt")
            saved = torch.load(tmp_path / "mid.pt", weights_only=True)
            resumed_net = copy.deepcopy(network)
            resumed_net.load_state_dict(saved["network"])
            optimizer = AMSGrad(resumed_net.parameters(), lr=1e-3)
            optimizer.load_state_dict(saved["optimizer"])
        optimizer.zero_grad()
        F.cross_entropy(resumed_net(images), labels).backward()
        optimizer.step()
    assert torch.equal(torch.cat([p.detach().flatten() for p in resumed_net.parameters()]), straight)


def test_one_rate_per_run_steps_a_stack_of_runs_as_each_run_alone():
    torch.manual_seed(0)
    stacked = torch.nn.Parameter(torch.randn(3, 4, 5))
    gradients = [torch.randn(3, 4, 5) for _ in range(5)]
    rates = torch.tensor([0.1, 0.01, 0.0])
    alone = [torch.nn.Parameter(stacked[r].detach().clone()) for r in range(3)]
    together = RMSProp([stacked], lr=rates)
    separately = [RMSProp([alone[r]], lr=rates[r].item()) for r in range(3)]
    for gradient in gradients:
        stacked.grad = gradient
        together.step()
        for r in range(3):
            alone[r].grad = gradient[r]
            separately[r].step()
    assert torch.allclose(stacked.detach(), torch.stack([p.detach() for p in alone]), atol=1e-7)
    assert not math.isclose(stacked[0, 0, 0].item(), stacked[2, 0, 0].item())


@pytest.mark.parametrize(
    "make, message",
    [
        (partial(HeavyBall, momentum=1.5), "momentum must be in [0.0, 1.0)"),
        (partial(RMSProp, decay=-0.1), "decay must be in [0.0, 1.0)"),
        (partial(SGD, lr=-1.0), "lr must be >= 0"),
        (partial(AMSGrad, betas=(0.9, 1.0)), "betas[1] must be in [0.0, 1.0)"),
    ],
)
def test_an_argument_out_of_range_is_one_line_naming_it(make, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make([torch.nn.Parameter(torch.zeros(1))])
