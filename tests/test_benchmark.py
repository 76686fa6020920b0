"""The benchmark script still runs and prints its three figures and both ratios (speed is not asserted here)."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # a fresh process timing real training steps



def test_benchmark_prints_three_variants_and_two_ratios(real_mnist):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gan_throughput.py"), "--steps", "3", "--warmup", "1", "--widths", "0.1", "--repeats", "1", "--data-dir", str(real_mnist)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(re.findall(r"^  \([abc]\) .* it/s$", result.stdout, flags=re.MULTILINE)) == 3
    assert re.search(r"ratio \(b\)/\(a\) = \d+\.\d+", result.stdout) and re.search(r"ratio \(b\)/\(c\) = \d+\.\d+", result.stdout)
