"""The training process's set-up, applied by ``train.py`` before anything is computed: the console
noise genlab knows to be harmless silenced, and two settings that matter on CPUs (the benchmarks
apply those too, to compare like with like)."""

from __future__ import annotations

import ctypes
import logging
import os
import warnings
from pathlib import Path

import torch


def set_up_process() -> None:
    silence_known_noise()
    silence_wandb_anonymous_notice()
    skip_cuda_probe_without_gpu()
    flush_denormals_to_zero()


def silence_known_noise() -> None:
    """Warnings genlab knows to be harmless, silenced by their exact message (deprecations, by the
    library whose call caused them); every other warning stays."""
    # Lightning's own use of a deprecated torch pytree API:
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # The GAN datamodules serve a validation split the GANs do not use (they have no validation_step):
    warnings.filterwarnings("ignore", message=r"You passed in a `val_dataloader` but have no `validation_step`")
    # Deprecation notices of the calls Lightning's CLI makes (jsonargparse's skip_none, add_instantiator,
    # instantiate_classes): Lightning's to change. genlab's own calls of a deprecated API still get theirs.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli\Z")
    # A test (or a fit from another run's checkpoint) goes to a new version folder: the top-k checkpoints
    # of the earlier folder are not carried over, as cli.run_folder places every such run.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from .* won't be reloaded")
    # The model summary's size estimate of a bf16 run counts 32 bits a parameter (as bf16-mixed stores them):
    warnings.filterwarnings("ignore", message=r"Precision bf16-\w+ is not supported by the model summary")
    # An advertisement for a cloud logger, printed by Lightning on every run:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip: For seamless cloud logging")
    )


def silence_wandb_anonymous_notice() -> None:
    """Lightning's ``WandbLogger`` always hands ``anonymous`` to ``wandb.init`` (``None`` when not given),
    and wandb, which dropped anonymous mode, answers any value once per process with "The anonymous
    setting has no effect and will be removed in a future version.": a line nobody can act on. wandb
    prints a once-only warning only if it is not among those it printed, so it is entered there."""
    try:
        from wandb.errors import term
    except ImportError:
        return
    message = "The anonymous setting has no effect and will be removed in a future version."
    printed = getattr(term, "_printed_messages", None)
    if isinstance(printed, set) and hasattr(term, "WARN_STRING"):
        printed.add(f"{term.WARN_STRING} {message}")


def skip_cuda_probe_without_gpu() -> None:
    """Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (fork-safe CUDA checks); with a CUDA build of
    torch on a machine without a GPU, every ``torch.optim`` step then probes NVML through ``dlopen``,
    a fifth of a tiny WGAN's critic update (docs/benchmarks.md). An empty ``CUDA_VISIBLE_DEVICES``
    answers "no GPU" without the probe; where a GPU is, nothing changes."""
    if "CUDA_VISIBLE_DEVICES" not in os.environ and torch.cuda.device_count() == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def flush_denormals_to_zero() -> None:
    """Floats below 1.2e-38 (denormals) become 0 in CPU arithmetic, in every thread torch computes in.

    Why: x86 computes with denormals many times slower, and the weights of a spectrally normalised critic
    decay into them (docs/benchmarks.md); nothing trained here needs magnitudes that small.

    Why every thread: ``torch.set_flush_denormal`` sets the calling thread's FPU flags only. OpenMP
    worker threads created later inherit them, but those that exist already (a process that computed
    something before, such as pytest's or a benchmark's) keep denormals, so a parallel op would flush
    the main thread's share of its elements and not the workers': a result that depends on which
    thread computed which element, exactly what must not vary between a run and its resume. The
    workers get the flag from inside one OpenMP parallel region of torch's own OpenMP runtime.
    """
    if not torch.set_flush_denormal(True):
        return  # a CPU without such a mode (torch supports it on x86)
    if not flushed_in_every_thread():
        set_flush_denormal_in_openmp_workers()
        if not flushed_in_every_thread():
            raise RuntimeError("torch.set_flush_denormal did not reach torch's worker threads (no GNU OpenMP runtime found).")


def flushed_in_every_thread() -> bool:
    """Whether an element-wise product split over all of torch's threads flushes every denormal result."""
    if torch.get_num_threads() == 1:
        return True
    products = torch.full((1 << 18,), 1e-30) * 1e-10  # 1e-40: a denormal, wherever it is not flushed
    return bool(products.view(torch.int32).eq(0).all())


def set_flush_denormal_in_openmp_workers(enabled: bool = True) -> None:
    """Call ``torch.set_flush_denormal(enabled)`` once in each thread of torch's OpenMP team (GNU libgomp,
    which the Linux wheels ship in ``torch/lib``): ``GOMP_parallel`` runs the callback in every thread."""
    bundled = sorted(Path(torch.__file__).parent.joinpath("lib").glob("libgomp*.so*"))
    gomp = ctypes.CDLL(str(bundled[0]) if bundled else "libgomp.so.1")

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def in_every_thread(_: int | None) -> None:
        torch.set_flush_denormal(enabled)

    gomp.GOMP_parallel(in_every_thread, None, ctypes.c_uint(torch.get_num_threads()), ctypes.c_uint(0))
