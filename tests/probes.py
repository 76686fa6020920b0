"""Probe callbacks for tests: added to in-process Trainers, or to CLI runs (`--trainer.callbacks+=tests.probes.X`)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch

from cli.checkpoint_io import AtomicCheckpointIO


class RankProbe(L.Callback):
    """Save, per rank, the final weights and a hash of every training image the rank saw."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = batch[0].cpu()
        self.seen += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images]

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.cpu() for k, v in pl_module.state_dict().items()}
        torch.save({"state_dict": state, "seen": self.seen}, self.out_dir / f"rank{trainer.global_rank}.pt")


class KillAt(L.Callback):
    """SIGKILL the process at the start of a given (0-based) epoch and batch: a crash, no cleanup."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class CheckpointAt(L.Callback):
    """Write a checkpoint to ``path`` at the end of a given (0-based) epoch and batch, and stop: a
    mid-epoch checkpoint, as Ctrl+C or a step-interval checkpoint leaves."""

    def __init__(self, epoch: int, batch: int, path: str) -> None:
        self.epoch, self.batch, self.path = epoch, batch, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


class OptimizerLog(L.Callback):
    """Records which network each optimizer step updated, and the losses of every batch."""

    def __init__(self):
        self.steps, self.losses = [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append("G" if optimizer is trainer.optimizers[0] else "D")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append({name: value.item() for name, value in outputs.items()})


class RecordDevice(L.Callback):
    """Write ``device.json`` (the run's ``CUDA_VISIBLE_DEVICES`` and accelerator) into the run folder."""

    def setup(self, trainer, pl_module, stage) -> None:
        record = {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "accelerator": type(trainer.accelerator).__name__,
        }
        Path(trainer.log_dir, "device.json").write_text(json.dumps(record))


class SignalAt(L.Callback):
    """Send the process a signal (``SIGTERM``, ``SIGINT``) at the start of a given (0-based) epoch and batch."""

    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, signal.Signals[name]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)


def signal_at_args(epoch: int, batch: int, name: str) -> list[str]:
    """The command-line arguments that add :class:`SignalAt` to a CLI run."""
    return ["--trainer.callbacks+=tests.probes.SignalAt", "--trainer.callbacks.epoch", str(epoch),
            "--trainer.callbacks.batch", str(batch), "--trainer.callbacks.name", name]  # fmt: skip


class SignalIn(L.Callback):
    """Send the process a signal in ``setup`` (after the run folder is claimed, before training) or in
    ``on_train_end`` (after training, while the final measurements run)."""

    def __init__(self, hook: str, name: str = "SIGINT") -> None:
        self.hook, self.signal = hook, signal.Signals[name]

    def setup(self, trainer, pl_module, stage) -> None:
        if self.hook == "setup":
            os.kill(os.getpid(), self.signal)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.hook == "on_train_end":
            os.kill(os.getpid(), self.signal)
            time.sleep(5)  # a final measurement under way, which the signal must cut short
            raise AssertionError(f"{self.signal.name} did not stop the final measurements")


class PauseAt(L.Callback):
    """At the start of a given (0-based) epoch and batch, create ``<release>.paused`` and wait until
    ``release`` exists: a run caught while it writes to its folder."""

    def __init__(self, epoch: int, batch: int, release: str) -> None:
        self.epoch, self.batch, self.release = epoch, batch, Path(release)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            Path(f"{self.release}.paused").touch()
            for _ in range(1200):
                if self.release.exists():
                    return
                time.sleep(0.1)
            raise TimeoutError(f"{self.release} never appeared")


class DiskFullAfter(AtomicCheckpointIO):
    """The disk fills during the ``failing_save``-th checkpoint write (1-based), after ``after_bytes``
    bytes of it reached the file, as a real full disk would: ``OSError(ENOSPC)`` half-way."""

    def __init__(self, failing_save: int = 1, after_bytes: int = 4096) -> None:
        super().__init__()
        self.failing_save, self.after_bytes, self.saves = failing_save, after_bytes, 0

    def write(self, checkpoint, file) -> None:
        self.saves += 1
        if self.saves != self.failing_save:
            return super().write(checkpoint, file)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        file.write(buffer.getvalue()[: self.after_bytes])
        file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class CtrlCDuringSave(AtomicCheckpointIO):
    """Ctrl+C pressed twice more while a checkpoint is being written (the impatient user)."""

    def write(self, checkpoint, file) -> None:
        for _ in range(2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        super().write(checkpoint, file)
