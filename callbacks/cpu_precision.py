"""bf16 on a CPU is fast only where the CPU multiplies bfloat16 itself: Intel's AMX (Xeon Sapphire Rapids
and later) or AVX-512-BF16 (AMD Zen 4 and later, Intel Cooper Lake). Elsewhere every bf16 matmul is
emulated, many times slower than the fp32 one it replaces, and a run meant to be faster is much slower.
The run is still correct, so it is warned of, not refused: a bf16 run on such a CPU has its uses (the
numerics of bf16 against fp32, docs/benchmarks.md; a test of the bf16 config on any machine)."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator

#: The CPU flags (``/proc/cpuinfo``) of units that multiply bfloat16: x86's AMX and AVX-512-BF16, ARM's BF16.
BF16_UNITS = {"amx_bf16", "avx512_bf16", "bf16"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The feature flags of the first CPU in ``cpuinfo`` (``flags`` on x86, ``Features`` on ARM), or
    None where there is no such file (another OS) or it does not say."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return None


class WarnOfEmulatedBf16(L.Callback):
    """One warning line on stderr when a run computes in a bf16 precision on a CPU without a bf16 unit
    (once: a fit and the test after it are one run)."""

    def __init__(self) -> None:
        self.warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        precision = str(trainer.precision)
        if self.warned or not precision.startswith("bf16") or not isinstance(trainer.accelerator, CPUAccelerator):
            return
        flags = cpu_flags()
        if flags is None or flags & BF16_UNITS or not trainer.is_global_zero:
            return
        self.warned = True
        print(
            f"genlab: warning: {precision} on this CPU (no AMX or AVX-512-BF16 unit: bf16 matmuls are emulated, "
            "many times slower than fp32); use --trainer.precision 32-true, or a GPU",
            file=sys.stderr,
        )
