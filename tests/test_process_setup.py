"""The process settings train.py applies on CPUs (cli/process_setup.py)."""

import os

import pytest
import torch

from cli.process_setup import (
    flush_denormals_to_zero,
    flushed_in_every_thread,
    set_flush_denormal_in_openmp_workers,
    skip_cuda_probe_without_gpu,
)


@pytest.mark.parametrize(
    "visible, gpus, expected",
    [(None, 0, ""), (None, 1, None), ("0", 0, "0")],
    ids=["no GPU: hidden from NVML", "a GPU: untouched", "user's choice: kept"],
)
def test_cuda_is_hidden_from_the_per_step_probe_only_where_there_is_no_gpu(monkeypatch, visible, gpus, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    skip_cuda_probe_without_gpu()
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == expected


def test_denormals_are_flushed_to_zero_in_every_thread_also_where_the_workers_existed_before():
    """The state of a process that computed before (pytest, a benchmark): torch's worker threads exist
    and keep denormals. ``torch.set_flush_denormal`` alone then flushes the main thread's share of a
    parallel product only; ``flush_denormals_to_zero`` reaches every thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.set_flush_denormal(False)
        set_flush_denormal_in_openmp_workers(False)
        products = torch.full((1 << 18,), 1e-30) * 1e-10  # 1e-40: denormal unless flushed
        assert products.view(torch.int32).ne(0).all() and not flushed_in_every_thread()
        torch.set_flush_denormal(True)
        share = (torch.full((1 << 18,), 1e-30) * 1e-10).view(torch.int32).eq(0).float().mean().item()
        assert share == pytest.approx(0.5, abs=0.01)  # the main thread's half of the elements only
        flush_denormals_to_zero()
        assert (torch.full((1 << 18,), 1e-30) * 1e-10).view(torch.int32).eq(0).all()
        assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
    finally:
        torch.set_num_threads(previous)
