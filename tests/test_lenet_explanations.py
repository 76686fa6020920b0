"""The CIFAR-10 homework's explanations as checks: the convolution output-size formula, why kernel 3
breaks the tutorial's fixed flatten while genlab's LeNet sizes itself, parameter-free max-pooling,
gradient accumulation without ``zero_grad``, and single-channel ``Normalize``."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from lightning_modules.components.lenet import LeNet, conv_output_size

TUTORIAL = {"channels": (6, 16), "paddings": (0, 0), "hidden": (120, 84), "dropout": 0.0}


class TutorialNet(nn.Module):
    """The PyTorch CIFAR-10 tutorial's network as written there: the flatten width typed in as 16 * 5 * 5."""

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, kernel_size)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@pytest.mark.parametrize(
    "size, kernel, padding, stride",
    [
        (32, 5, 0, 1),
        (14, 5, 0, 1),
        (32, 3, 0, 1),
        (32, 3, 1, 1),
        (32, 5, 2, 1),
        (32, 5, 0, 2),
        (28, 2, 0, 2),
        (7, 3, 1, 2),
        (10, 4, 0, 3),
    ],
)
def test_output_size_formula_matches_conv2d(size, kernel, padding, stride):
    conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == conv_output_size(size, kernel, padding, stride)


def side_after_two_blocks(kernel: int, size: int = 32) -> int:
    """conv (no padding) -> 2x2 pool -> conv -> 2x2 pool, by the formula."""
    for _ in range(2):
        size = conv_output_size(conv_output_size(size, kernel), 2, stride=2)
    return size


def test_the_tutorial_sizes_32_to_5_with_5x5_kernels_and_6_with_3x3():
    assert (
        side_after_two_blocks(5) == 5 and side_after_two_blocks(3) == 6
    )  # fc1 takes 16 * 5 * 5 = 400, but 16 * 6 * 6 = 576 with kernel 3


def test_kernel_3_breaks_the_fixed_flatten_and_lenet_sizes_itself():
    images = torch.randn(4, 3, 32, 32)
    assert TutorialNet(kernel_size=5)(images).shape == (4, 10)
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(4x576 and 400x120\)"):
        TutorialNet(kernel_size=3)(images)
    for kernel in (3, 5):
        network = LeNet((3, 32, 32), 10, kernel_size=kernel, **TUTORIAL)
        assert network(images).shape == (4, 10)
        assert network.feature_layer[1].in_features == 16 * side_after_two_blocks(kernel) ** 2


def test_lenet_with_the_tutorial_settings_is_the_tutorial_network():
    ours, theirs = LeNet((3, 32, 32), 10, **TUTORIAL), TutorialNet()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 62_006
    pairs = [
        (ours.conv[0], theirs.conv1),
        (ours.conv[3], theirs.conv2),
        (ours.feature_layer[1], theirs.fc1),
        (ours.feature_layer[3], theirs.fc2),
        (ours.head[1], theirs.fc3),
    ]
    with torch.no_grad():
        for mine, tutorial in pairs:
            mine.weight.copy_(tutorial.weight)
            mine.bias.copy_(tutorial.bias)
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(ours(images), theirs(images))


def test_max_pooling_has_no_parameters():
    assert list(nn.MaxPool2d(2).parameters()) == []
    network = LeNet((3, 32, 32), 10, **TUTORIAL)
    parameterised = {type(module) for module in network.modules() if list(module.parameters(recurse=False))}
    assert parameterised == {nn.Conv2d, nn.Linear}


def test_without_zero_grad_gradients_accumulate_to_the_sum_of_both_batches():
    torch.manual_seed(0)
    network = LeNet((3, 32, 32), 10, **TUTORIAL)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))) for _ in range(2)]

    def gradients_of(batch):
        network.zero_grad()
        F.cross_entropy(network(batch[0]), batch[1]).backward()
        return [p.grad.clone() for p in network.parameters()]

    first, second = gradients_of(batches[0]), gradients_of(batches[1])
    network.zero_grad()
    for images, labels in batches:  # the bug: no zero_grad between the two backward passes
        F.cross_entropy(network(images), labels).backward()
    for accumulated, a, b in zip((p.grad for p in network.parameters()), first, second):
        torch.testing.assert_close(accumulated, a + b)


def test_normalize_takes_one_mean_and_std_per_channel_and_three_silently_make_a_gray_image_colour():
    gray = torch.rand(1, 28, 28)
    torch.testing.assert_close(v2.Normalize((0.5,), (0.5,))(gray), (gray - 0.5) / 0.5)
    # the colour tutorial's three values raise nothing: they broadcast one channel into three, and
    # the error surfaces later, in the first convolution (it expects 1 input channel)
    assert v2.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(gray).shape == (3, 28, 28)
    with pytest.raises(RuntimeError, match="expected input.* to have 1 channels, but got 3 channels"):
        nn.Conv2d(1, 6, 5)(v2.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(gray).unsqueeze(0))
