"""``model.compile``: the step's maths captured by ``torch.compile`` (inductor on the CPU) trains as eager does.

Each case trains 20 optimizer steps eagerly and compiled from the same seed, in float64, and compares
every parameter to 1e-5. Float64 because the fused kernels round differently: in float32 Adam's first
steps (an update of ~lr whatever the gradient's size) turn a rounding difference in a near-zero gradient
into a 1e-5 difference of a weight within 20 steps, which says nothing about the maths. Inductor would
draw dropout masks from its own generator; ``fallback_random`` makes it draw torch's numbers, so that
the two runs see the same masks.
"""

from functools import partial

import pytest
import torch
from torch._inductor import config as inductor_config

from core.errors import ConfigError
from datamodules import MNISTDataModule, Ring8DataModule
from lightning_modules import GAN, VAE, WGAN, Classifier
from lightning_modules.components.lenet import LeNet
from lightning_modules.components.lipschitz import GradientPenalty, SpectralNormalization, WeightClipping
from tests.conftest import TINY_GAN

STEPS = 20
TINY_WGAN = {"generator_hidden": (16,), "critic_hidden": (16,), "n_critic": 2}
CASES = {
    "GAN, dropout": (partial(GAN, **TINY_GAN, dropout=0.3), "mnist"),
    "WGAN, spectral norm": (partial(WGAN, **TINY_WGAN, lipschitz=SpectralNormalization()), "ring8"),
    "WGAN, clipping": (partial(WGAN, **TINY_WGAN, lipschitz=WeightClipping()), "ring8"),
    "WGAN, gradient penalty (eager penalty)": (partial(WGAN, **TINY_WGAN, lipschitz=GradientPenalty()), "ring8"),
    "VAE": (partial(VAE, hidden=(32,), latent_dim=4), "mnist unit"),
    "classifier": (partial(Classifier, network=partial(LeNet, channels=(2, 4), hidden=(8,))), "mnist"),
}


def data(kind: str, root) -> torch.nn.Module:
    if kind == "ring8":
        return Ring8DataModule(num_samples=640, batch_size=32)
    normalization = {"mnist": "symmetric", "mnist unit": "unit"}[kind]
    return MNISTDataModule(data_dir=str(root), batch_size=32, val_size=0, normalization=normalization)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_compiled_step_trains_as_the_eager_one(name, synthetic_mnist, fit_tiny):
    model, kind = CASES[name]
    options = {"max_steps": STEPS, "max_epochs": 10, "limit_val_batches": 0, "precision": "64-true"}
    _, eager = fit_tiny(partial(model, compile="none"), data(kind, synthetic_mnist), **options)
    with inductor_config.patch(fallback_random=True):
        _, compiled = fit_tiny(partial(model, compile="default"), data(kind, synthetic_mnist), **options)
    assert compiled.compiled._compiled, "nothing was compiled"
    for (key, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=lambda message, key=key: f"{key}: {message}")


def test_an_unknown_compile_mode_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"model.compile must be one of \['none', 'default', 'reduce-overhead'"):
        GAN(**TINY_GAN, compile="fast")
