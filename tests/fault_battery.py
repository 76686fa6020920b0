"""The fault battery of tests/test_bad_input.py: what a new (or careless) user gets wrong, as the arguments
that do it, the data folder it needs and a piece of the one line genlab must answer with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.conftest import ROOT, cifar_tree, write_idx, write_synthetic_mnist

CONFIGS = ROOT / "configs"


# --- data folders a fault may need -----------------------------------------------------------------
def mnist(root: Path) -> None:
    write_synthetic_mnist(root)


def truncated_mnist(root: Path) -> None:
    write_synthetic_mnist(root)
    images = root / "MNIST/raw/train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])


def mnist_with_label_10(root: Path) -> None:
    write_synthetic_mnist(root)
    labels = torch.arange(256, dtype=torch.uint8) % 10
    labels[17] = 10
    write_idx(root / "MNIST/raw/train-labels-idx1-ubyte", labels)


def mnist_of_32_pixel_images(root: Path) -> None:
    write_synthetic_mnist(root)
    write_idx(root / "MNIST/raw/train-images-idx3-ubyte", torch.zeros(256, 32, 32, dtype=torch.uint8))


def cifar_with_unreadable_file(root: Path) -> None:
    (cifar_tree(root) / "train/cat/0001.png").write_bytes(b"not a png")


def cifar_with_wrong_size(root: Path) -> None:
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(cifar_tree(root) / "train/dog/0001.png")


def cifar_with_empty_class(root: Path) -> None:
    for image in (cifar_tree(root) / "train/frog").iterdir():
        image.unlink()


# --- the battery -----------------------------------------------------------------------------------
@dataclass
class Fault:
    args: list[str]
    message: str  # a piece of the last stderr line
    config: str = "gan_mnist"
    data: object = mnist
    code: int = 2
    subcommand: str = "fit"


CIFAR = [
    "--data.class_path",
    "datamodules.CIFAR10DataModule",
    "--data.init_args.val_size",
    "0",
    "--data.init_args.batch_size",
    "4",
]

FAULTS = {
    # config values and types
    "type of a model value": Fault(["--model.init_args.n_critic", "five"], "n_critic"),
    "k below 1": Fault(
        ["--model.init_args.n_critic", "0"],
        "model.init_args.n_critic (discriminator steps per generator step) must be an integer >= 1, got 0.",
    ),
    "negative learning rate": Fault(["--model.init_args.lr_g", "-0.1"], "model.init_args.lr_g must be > 0, got -0.1."),
    "Adam beta of 1.5": Fault(
        ["--model.init_args.betas_d", "[0.5, 1.5]"], "model.init_args.betas_d must be two Adam betas in [0, 1), got [0.5, 1.5]."
    ),
    "code size 0": Fault(
        ["--model.init_args.code_size", "0"], "model.init_args.code_size must be an integer >= 1, got 0.", config="ae_mnist"
    ),
    "negative noise": Fault(
        ["--model.init_args.noise_std", "-0.1"],
        "model.init_args.noise_std and model.test_noise_stds must be >= 0",
        config="dae_mnist",
    ),
    "no importance samples": Fault(
        ["--model.init_args.test_samples", "0"],
        "model.init_args.test_samples and model.test_chunk must be >= 1",
        config="vae_mnist",
    ),
    "hidden width 0": Fault(
        ["--model.init_args.generator_hidden", "[0, 16]"],
        "model.init_args.generator_hidden must be positive layer widths, got [0, 16].",
    ),
    "unknown loss class": Fault(["--model.init_args.loss", "MinimaxLoss"], "MinimaxLoss"),
    "unknown Lipschitz strategy": Fault(
        ["--model.init_args.lipschitz", "Clamp"], "Clamp", config="wgan_ring8_spectral_norm", data=None
    ),
    "output range vs data": Fault(["--model.init_args.output_activation", "sigmoid"], "sigmoid"),
    "unknown strategy": Fault(["--trainer.strategy", "nonsense"], "You selected an invalid strategy name: `strategy='nonsense'`"),
    "broken YAML": Fault(["--trainer", "{ws}/broken.yaml"], "broken.yaml' while parsing a flow sequence"),
    "config file of binary bytes": Fault(
        ["--config", "{ws}/binary.yaml"], "binary.yaml is not a text file in UTF-8 (invalid start byte at byte 1)"
    ),
    "config file in Latin-1": Fault(
        ["--trainer", "{ws}/latin1.yaml"], "latin1.yaml is not a text file in UTF-8 (invalid continuation byte at byte 18)"
    ),
    "negative workers": Fault(
        ["--data.init_args.in_memory", "false", "--data.init_args.num_workers", "-1"], "data.init_args.num_workers must be >= 0"
    ),
    "no minibatch per training step": Fault(
        ["--data.init_args.minibatches_per_step", "0"],
        "data.init_args.minibatches_per_step must be >= 1",
        config="wgan_ring8_spectral_norm",
        data=None,
    ),
    "mixture smaller than a batch": Fault(
        ["--data.init_args.num_samples", "10"],
        "data.batch_size=256 is larger than the 10 training samples",
        config="wgan_ring8_spectral_norm",
        data=None,
    ),
    "test without weights": Fault(
        [], "test evaluates trained weights: pass --ckpt_path", config="classifier_mnist", subcommand="test"
    ),
    "unknown trainer key": Fault(["--trainer.max_epoch", "3"], "max_epoch"),
    "missing config file": Fault([], "does_not_exist.yaml", config="does_not_exist"),
    "batch size 0": Fault(["--data.init_args.batch_size", "0"], "data.init_args.batch_size must be a positive integer, got 0."),
    "batch larger than the data": Fault(
        ["--data.init_args.batch_size", "100000"],
        "data.init_args.batch_size=100000 is larger than the 256 training samples per process",
    ),
    "val split takes all": Fault(["--data.init_args.val_size", "256"], "data.init_args.val_size=256 leaves no training data"),
    "max_epochs 0": Fault(["--trainer.max_epochs", "0"], "trainer.max_epochs=0 trains nothing"),
    "limit_train_batches 0": Fault(["--trainer.limit_train_batches", "0"], "trainer.limit_train_batches=0 trains nothing"),
    "limit_train_batches below one batch": Fault(["--trainer.limit_train_batches", "0.0001"], "limit_train_batches"),
    "devices 0": Fault(["--trainer.devices", "0"], "devices"),
    # callback arguments that cannot work
    "grid at epoch 0": Fault(
        ["--trainer.callbacks", "[{class_path: callbacks.SampleGrid, init_args: {epochs: [0, 5]}}]"],
        "SampleGrid: epochs are 1-based",
    ),
    "curve of a metric never logged": Fault(
        [
            "--trainer.callbacks",
            "[{class_path: callbacks.LearningCurves, init_args: {panels: {loss: [train/d_loss, train/no_such]}}}]",
        ],
        "LearningCurves panels name ['train/no_such'], which GAN does not log",
    ),
    # data files and folders
    "no dataset": Fault(
        ["--data.init_args.download", "false"],
        "Dataset not found. MNIST is missing from",
        data=lambda root: root.mkdir(exist_ok=True),
    ),
    "truncated IDX file": Fault([], "train-images-idx3-ubyte is truncated or corrupt", data=truncated_mnist),
    "label outside the classes": Fault(
        [], "train-labels-idx1-ubyte: label 10 at index 17 is not a class (0..9)", data=mnist_with_label_10
    ),
    "image of the wrong size": Fault(
        [], "train-images-idx3-ubyte holds images of shape (32, 32), MNIST images are 28x28", data=mnist_of_32_pixel_images
    ),
    "unreadable image among many": Fault(
        CIFAR, "train/cat/0001.png is not a readable image", config="classifier_mnist", data=cifar_with_unreadable_file
    ),
    "CIFAR image of the wrong size": Fault(
        CIFAR,
        "train/dog/0001.png is 28x28 pixels, CIFAR-10 images are 32x32",
        config="classifier_mnist",
        data=cifar_with_wrong_size,
    ),
    "empty class folder": Fault(CIFAR, "train/frog holds no images", config="classifier_mnist", data=cifar_with_empty_class),
    # the stored networks the sample-quality metrics measure with
    "garbage classifier file": Fault(
        ["--trainer.callbacks.classifier", "{ws}/garbage.ckpt"],
        "garbage.ckpt is not a file torch.save wrote (truncated or replaced?): train and export one with",
    ),
    "another network's file as the classifier": Fault(
        ["--trainer.callbacks.classifier", str(ROOT / "pretrained/vae_encoder_mnist.pt")],
        "vae_encoder_mnist.pt: its network arguments and weights do not make a LeNet (TypeError)",
    ),
    "garbage encoder file": Fault(
        ["--trainer.callbacks.encoder", "{ws}/garbage.ckpt"],
        "VAE encoder file {ws}/garbage.ckpt is not a file torch.save wrote",
    ),
    # checkpoints
    "missing checkpoint": Fault(["--ckpt_path", "{ws}/nope.ckpt"], "nope.ckpt: no such file"),
    "empty checkpoint": Fault(["--ckpt_path", "{ws}/empty.ckpt"], "empty.ckpt is not a readable checkpoint"),
    "garbage checkpoint": Fault(["--ckpt_path", "{ws}/garbage.ckpt"], "garbage.ckpt is not a readable checkpoint"),
    "weights without training state": Fault(
        ["--ckpt_path", "{ws}/lenet.pt"], "lenet.pt is not a Lightning checkpoint (no training state)"
    ),
    "checkpoint of another model": Fault(
        ["--ckpt_path", "{ckpt}"],
        "was written by model lightning_modules.GAN, but the config's model is lightning_modules.CGAN",
        config="cgan_fashion_mnist",
    ),
    "checkpoint of another dataset": Fault(
        ["--ckpt_path", "{ckpt}"],
        "was written by data datamodules.MNISTDataModule, but the config's data is datamodules.FashionMNISTDataModule",
        config="gan_fashion_mnist",
    ),
    "override dropped on resume": Fault(
        ["--ckpt_path", "{ckpt}", "--model.init_args.n_critic", "3"], "model.init_args.n_critic=3 (checkpoint: 1)"
    ),
    "data changed on resume": Fault(
        ["--ckpt_path", "{ckpt}", "--data.init_args.normalization", "unit"],
        "data.init_args.normalization='unit' (checkpoint: 'symmetric')",
    ),
    "resume past max_epochs": Fault(
        ["--ckpt_path", "{ckpt}"],
        "that run is complete (it trained 1 epoch of --trainer.max_epochs 1): raise --trainer.max_epochs",
    ),
    "resume past max_steps": Fault(
        ["--ckpt_path", "{ckpt}", "--trainer.max_epochs", "5", "--trainer.max_steps", "4"],
        "that run is complete (it is at step 4 of --trainer.max_steps 4): raise --trainer.max_steps",
    ),
    "checkpoint path is a run folder": Fault(
        ["--ckpt_path", "{ws}/runs/trained/version_0"], "version_0 is a folder: pass a checkpoint file, e.g."
    ),
    "newest last.ckpt links to a deleted file": Fault(
        ["--ckpt_path", "last", "--run_name", "dangling"], "last.ckpt links to epoch=9-step=99.ckpt, which no longer exists"
    ),
    "last of a run never trained": Fault(
        ["--ckpt_path", "last", "--run_name", "never_trained"], "--ckpt_path last: run 'never_trained' has no checkpoint"
    ),
    # run directories and loggers
    "run name with a path in it": Fault(
        ["--run_name", "../escape"], "--run_name '../escape' must be a folder name (not empty, no '/', not '.' or '..')"
    ),
    "empty run name": Fault(["--run_name", ""], "--run_name '' must be a folder name"),
    "folder of another run": Fault(
        ["--trainer.logger.init_args.version", "0", "--run_name", "trained"], "runs/trained/version_0 already holds another run"
    ),
    "output under a file": Fault(
        ["--trainer.logger", "false", "--trainer.default_root_dir", "{ws}/empty.ckpt/run"], "empty.ckpt"
    ),
    "run folder not writable": Fault(
        ["--trainer.logger.init_args.save_dir", "{locked}/runs"], "locked/runs: Operation not permitted. Fix its permissions"
    ),
    "W&B online without a login": Fault(
        ["--trainer.logger", str(CONFIGS / "logger/wandb_online.yaml")], "W&B: No API key configured"
    ),
}
