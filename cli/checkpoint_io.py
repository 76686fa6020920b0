"""Checkpoints written where they live: a full disk or a crash never leaves a truncated ``.ckpt``.

Lightning's own write (fsspec's transaction) goes to a temporary file in the system's temp folder and
then moves it across file systems: a disk that fills during the move leaves a truncated checkpoint in
the run folder, and the error names the temporary file. Here every checkpoint goes to a temporary
file beside its destination, is flushed to disk and renamed over it (``callbacks.run_outputs.write_atomically``);
a write that fails removes the temporary file, so the previous checkpoint and the ``last.ckpt`` link
that points at it stay as they were. Reading goes through :func:`core.torch_files.torch_load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from callbacks.run_outputs import write_atomically
from core.errors import GenlabError


class CheckpointWriteError(GenlabError, OSError):
    """A checkpoint could not be written; what was on disk before is intact."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(error.errno, error.strerror, str(path))
        kept = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path) if path.parent.is_dir() else []
        self.message = (
            f"could not write the checkpoint {path}: {error.strerror or error}. Nothing was half-written; "
            + (
                f"the earlier checkpoints ({', '.join(kept)}) are intact. "
                if kept
                else "no checkpoint of this run was written yet. "
            )
            + "Free space on that disk (or fix its permissions), or point the run elsewhere with --trainer.default_root_dir"
            + (f", then resume with --ckpt_path {path.parent / 'last.ckpt'}." if "last.ckpt" in kept else ".")
        )

    def __str__(self) -> str:
        return self.message


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic where the checkpoint lives (remote URLs
    keep Lightning's write). ``train.py`` puts it in place of Lightning's default."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # s3://, gs://, ...: fsspec's write
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as file:
                self.write(checkpoint, file)

        try:
            write_atomically(path, write)
        except OSError as error:
            raise CheckpointWriteError(path, error) from None

    def write(self, checkpoint: dict[str, Any], file: IO[bytes]) -> None:
        """Serialise ``checkpoint`` into the open temporary file (tests override it to fill the disk)."""
        torch.save(checkpoint, file)
