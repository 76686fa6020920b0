"""An autoencoder's codes of an image datamodule's images, and the images of codes: what the
callbacks about its code (:mod:`callbacks.latent_space`, :mod:`callbacks.autoencoder_figures`) share.

They rely on this model interface (:class:`lightning_modules.Autoencoder` and
:class:`lightning_modules.VAE` provide it):

- ``code_size: int``, the size of the latent code;
- ``encode(images) -> (N, code_size)``: the code of an autoencoder, the posterior mean of a VAE,
  of images as the datamodule's ``normalize`` gives them;
- ``decode(codes) -> (N, C, H, W)``: images in the datamodule's normalization (its ``denormalize``
  turns them into [0, 1] pixels);
- ``sample_prior(num_samples, rng) -> (N, code_size)``: codes drawn from the prior N(0, I) with the
  ``torch.Generator`` ``rng``; only VAEs have it.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from callbacks.run_outputs import eval_mode

#: Images encoded at a time: the whole test split at once would hold every activation of 10,000 images.
CHUNK = 1000


@torch.no_grad()
def encode_images(pl_module: L.LightningModule, datamodule: L.LightningDataModule, images: Tensor) -> Tensor:
    """Codes of ``uint8`` images, :data:`CHUNK` at a time, in eval mode, on the CPU."""
    with eval_mode(pl_module):
        chunks = [
            pl_module.encode(datamodule.normalize(chunk.to(pl_module.device))).float().cpu() for chunk in images.split(CHUNK)
        ]
    return torch.cat(chunks)


@torch.no_grad()
def decode_codes(pl_module: L.LightningModule, datamodule: L.LightningDataModule, codes: Tensor) -> Tensor:
    """[0, 1] pixels of decoded codes, in eval mode, on the CPU."""
    with eval_mode(pl_module):
        return datamodule.denormalize(pl_module.decode(codes.to(pl_module.device)).float()).cpu()
