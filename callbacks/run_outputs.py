"""What the callbacks share: writing files to the run directory and values to the experiment
loggers, and running a network in eval mode between training steps.

While a callback measures one member of a population (:func:`member_outputs`, opened by
``callbacks.population_members.EachMember``), the run directory is the member's folder ``member_<p>/``
and every scalar and image it sends goes out as ``<name>/member_<p>``: the callback itself is a single
run's, unchanged."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import nn

#: The member measured now, and the scalars it has sent (by their names without the member): see :func:`member_outputs`.
MEASURED_MEMBER: ContextVar[tuple[int, dict[str, float]] | None] = ContextVar("measured_member", default=None)


@contextmanager
def member_outputs(member: int) -> Iterator[dict[str, float]]:
    """For the block, the outputs of member ``member``: files in ``member_<p>/`` of the run directory, scalars and
    images named ``<name>/member_<p>``. Yields the scalars sent meanwhile, by their plain names (for their mean)."""
    sent: dict[str, float] = {}
    token = MEASURED_MEMBER.set((member, sent))
    try:
        yield sent
    finally:
        MEASURED_MEMBER.reset(token)


def member_name(name: str) -> str:
    """``name``, or ``name/member_<p>`` while member p is measured."""
    measured = MEASURED_MEMBER.get()
    return name if measured is None else f"{name}/member_{measured[0]}"


def run_directory(trainer: L.Trainer) -> Path:
    """The run's folder: the first logger's versioned folder, else ``default_root_dir``; ``member_<p>/``
    in it while member p is measured.

    ``trainer.log_dir`` is a collective under DDP (rank 0 broadcasts it), so call this on every
    rank, e.g. in ``setup``, never inside rank-zero-only code.
    """
    log_dir = trainer.log_dir
    folder = Path(log_dir if log_dir is not None else trainer.default_root_dir)
    measured = MEASURED_MEMBER.get()
    return folder if measured is None else folder / f"member_{measured[0]}"


def write_atomically(path: Path, write) -> None:
    """``write(tmp_path)`` to a temporary file beside ``path``, flushed to disk (``fsync``), then
    renamed over ``path``: a crash or a full disk leaves either the old file or the new one, never a
    half-written one, and a failed write removes its temporary file. The temporary file is in the
    same folder because only a rename within one file system is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file a normal file's mode
        os.replace(tmp, path)
    except OSError as error:  # named after the file it was for, not the temporary one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the OS allows opening a folder."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def send_image_to_loggers(trainer: L.Trainer, key: str, path: Path, caption: str) -> None:
    """Upload a saved PNG to every logger that stores images (W&B; CSV keeps only scalars)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=member_name(key), images=[str(path)], caption=[caption], step=trainer.global_step)


def write_final_metrics(directory: Path, metrics: dict) -> None:
    """``final_metrics.json``: a run's last measurements, what ``study.py`` records on the trial and tabulates.
    Several callbacks write it (sample quality, latent space): each adds its keys to those there."""
    path = directory / "final_metrics.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps({**earlier, **metrics}, indent=2)))


def log_scalars(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Send scalars measured outside ``training_step`` to every logger, on the step axis of
    ``self.log``: at the index of the last training batch (counted across epochs), so a metric
    measured at an epoch's end shares the step of that epoch's means. They also go into
    ``trainer.callback_metrics``, where callbacks that watch metrics (early stopping, a study's
    pruner) look for them. While a member is measured, as ``<name>/member_<p>``."""
    measured = MEASURED_MEMBER.get()
    if measured is not None:
        measured[1].update(metrics)
        metrics = {member_name(name): value for name, value in metrics.items()}
    trainer.callback_metrics.update({name: torch.tensor(float(value)) for name, value in metrics.items()})
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.fit_loop.epoch_loop.total_batch_idx)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout, batch-norm running statistics) for the block, then
    back to the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
