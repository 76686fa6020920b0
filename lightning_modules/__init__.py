"""genlab's LightningModules: one experiment per file; shared parts in :mod:`lightning_modules.components`."""

from lightning_modules.autoencoder import Autoencoder
from lightning_modules.cgan import CGAN
from lightning_modules.classifier import Classifier
from lightning_modules.flow import Flow
from lightning_modules.gan import GAN
from lightning_modules.optimizer_study import OptimizerStudy
from lightning_modules.vae import VAE
from lightning_modules.wgan import WGAN

__all__ = ["CGAN", "GAN", "VAE", "WGAN", "Autoencoder", "Classifier", "Flow", "OptimizerStudy"]
