"""The benchmark scripts still run and print, for the GAN, the machine's matmul rates, its four variants with their
share of the machine, and the ratios against their targets; for the WGAN and the CIFAR-10 classifier, each
variant against the plain loop; for the study database, its row with every point done once; for precision and recall,
every feature space; the GPU check's smoke run writes every part into its JSON (speed is not asserted here)."""

import json
import re
import subprocess
import sys

import pytest

from datamodules import MNISTDataModule
from lightning_modules import GAN
from tests.conftest import ROOT, TINY_GAN

pytestmark = pytest.mark.slow  # a fresh process timing real training steps


def test_benchmark_prints_matmul_rates_four_variants_and_the_ratios(real_mnist):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gan_throughput.py"),
            "--steps",
            "3",
            "--warmup",
            "1",
            "--widths",
            "0.1",
            "--repeats",
            "1",
            "--data-dir",
            str(real_mnist),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.search(
        r"^machine: matmul 64x1024 @ 1024x1024: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s", result.stdout, flags=re.MULTILINE
    )
    assert re.search(r"hidden widths x0.1: \d+\.\d+ GFLOP per iteration", result.stdout)
    assert (
        len(re.findall(r"^  \([abcde]\) .* it/s +\d+\.\d GFLOP/s = \d\.\d\d of fp32 matmul$", result.stdout, flags=re.MULTILINE))
        == 5
    )
    for ratio in (r"\(b\)/\(a\)", r"\(e\)/\(a\)", r"\(b\) of fp32 matmul", r"\(d\)/\(b\) bf16 over fp32", r"\(b\)/\(c\)"):
        assert re.search(rf"^  {ratio} += \d+\.\d+   \(target >= \d", result.stdout, flags=re.MULTILINE), ratio


def test_wgan_benchmark_prints_each_variant_and_the_ratio_to_the_plain_loop():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "wgan_throughput.py"),
         "--iterations", "20", "--warmup", "5", "--repeats", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    for strategy in ("SpectralNormalization", "GradientPenalty"):
        assert f"\n{strategy} (median of 1 interleaved rounds):" in result.stdout
    assert (
        len(
            re.findall(r"^  \([abc]\) .* \d+ critic it/s +100k in +\d+ s +\d+\.\d\d of \(a\)$", result.stdout, flags=re.MULTILINE)
        )
        == 6
    )
    assert (
        len(
            re.findall(
                r"^  \(b\)/\(a\) = \d+\.\d{3}, \(c\)/\(a\) = \d+\.\d{3}   \(target for \(c\)/\(a\) >= 0\.8\)$",
                result.stdout,
                flags=re.MULTILINE,
            )
        )
        == 2
    )


def test_classifier_benchmark_prints_the_three_variants_and_genlab_over_the_plain_loop(real_cifar10_images):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "classifier_throughput.py"),
         "--batch-sizes", "4", "--minibatches", "40", "--warmup", "10", "--group", "10", "--repeats", "1",
         "--data-dir", str(real_cifar10_images)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(re.findall(r"^  \([abc]\) .* +\d+ minibatches/s +\d+\.\d\d x \(a\)$", result.stdout, flags=re.MULTILINE)) == 3
    assert re.search(r"^  genlab/plain \d+\.\d\d \(target >= 0\.80\)$", result.stdout, flags=re.MULTILINE)


def test_population_benchmark_prints_each_variant_the_speedups_and_the_study_time(real_mnist):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "population_throughput.py"),
         "--steps", "4", "--warmup", "2", "--repeats", "1", "--data-dir", str(real_mnist)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(re.findall(r"^  \([abc]\) .* +\d+ run-steps/s +whole study +\d+\.\d min$", result.stdout, flags=re.MULTILINE)) == 3
    assert len(re.findall(r"^  population / .* \d+\.\d\d x \(target >= 5\)$", result.stdout, flags=re.MULTILINE)) == 2
    assert re.search(
        r"^  whole study as a population: \d+\.\d min of training \(target <= 10\)$", result.stdout, flags=re.MULTILINE
    )


def test_fidelity_sanity_prints_four_feature_spaces_with_every_set_and_a_gan_checkpoint(real_mnist, make_trainer, tmp_path):
    checkpoint = tmp_path / "studies" / "tiny" / "gan_tiny" / "seed_0" / "checkpoints" / "last.ckpt"
    trainer = make_trainer(max_steps=2)
    trainer.fit(GAN(**TINY_GAN), MNISTDataModule(data_dir=str(real_mnist), val_size=0))
    trainer.save_checkpoint(checkpoint)
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fidelity_sanity.py"),
         "--num", "300", "--data-dir", str(real_mnist), "--gan", str(checkpoint)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    rows = re.findall(
        r"^\| (.+?) \| (\d\.\d\d) \| (\d\.\d\d) \| (\d+\.\d\d) \| (\d\.\d\d) \|$", result.stdout, flags=re.MULTILINE
    )
    assert len(rows) == 40 and rows[0][0] == "real train"  # (9 real sets + the GAN's samples) x 4 feature spaces
    assert [row[0] for row in rows].count("tiny: gan_tiny seed_0") == 4
    assert all(0 <= float(value) <= 1 for row in rows for value in (row[1], row[2], row[4]))


def test_study_storage_benchmark_runs_every_point_once_and_prints_its_row(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "study_storage.py"),
         "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--workers", "2", "--trials", "12"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.search(r"^\| sqlite \| 2 \| 12 \| \d+\.\d \| \d+ \| 12 \| 0 \| 0 \| 0 \|$", result.stdout, flags=re.MULTILINE), (
        result.stdout
    )


def test_fidelity_sanity_on_fashion_mnist_has_the_two_spaces_without_a_stored_encoder(real_fashion_mnist):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fidelity_sanity.py"),
         "--dataset", "fashion_mnist", "--num", "300", "--data-dir", str(real_fashion_mnist)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert re.findall(r"^(\S[^|\n]*), 300 test images as reference", result.stdout, flags=re.MULTILINE) == [
        "classifier features",
        "raw pixels",
    ]
    assert (
        len(re.findall(r"^\| .+? \| \d\.\d\d \| \d\.\d\d \| \d+\.\d\d \| \d\.\d\d \|$", result.stdout, flags=re.MULTILINE)) == 18
    )
    assert '| only "Trouser"s |' in result.stdout


def test_adversarial_population_benchmark_prints_each_case_and_its_speedup(real_mnist):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "adversarial_population.py"),
         "--steps", "5", "--warmup", "2", "--repeats", "1", "--cases", "ring8-sn", "vae-batch20"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = re.findall(r"^(\S+) +P = +(\d+): .* speed-up +\d+\.\d\dx \(target >= (\S+)x\)$", result.stdout, flags=re.MULTILINE)
    assert lines == [("ring8-sn", "10", "5.0"), ("vae-batch20", "5", "3.0")], result.stdout


def test_device_check_smoke_writes_every_part_and_copies_the_grids_and_final_metrics(real_mnist, tmp_path):
    out = tmp_path / "device_check"
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--smoke", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    report = json.loads((out / "device_check.json").read_text())
    assert set(report) == {
        "mode", "machine", "budget", "elapsed_s", "gan_mnist_throughput", "wgan_ring8", "vae_mnist", "gan_mnist_100_epochs"
    }  # fmt: skip
    assert report["mode"] == "smoke (CPU)"
    assert {"gpu", "torch", "cuda", "cpu"} <= set(report["machine"])
    throughput = report["gan_mnist_throughput"]
    assert throughput["batch_size"] == 64 and throughput["widths"] == 0.0625
    assert throughput["plain_eager"]["iterations_per_s"] > 0 and throughput["genlab_eager"]["iterations_per_s"] > 0
    assert throughput["plain_cuda_graph"] == "skipped: no CUDA"
    captured = throughput["genlab_captured"]
    assert captured["mode"] == "default" and captured["iterations_per_s"] > 0 and captured["first_batch_s"] > 0, captured
    population = throughput["genlab_population_10"]
    assert population["members"] == 10 and population["member_iterations_per_s"] > 0, population
    for part in ("wgan_ring8", "vae_mnist"):
        assert report[part]["timed_steps"] == 20 and report[part]["iterations_per_s"] > 0, report[part]
        assert report[part]["exit_status"] == 0
    run = report["gan_mnist_100_epochs"]
    assert run["compile"] == "none"  # captured only on a GPU
    assert run["epochs_done"] == 2 and run["exit_status"] == 0 and run["wall_s"] > 0
    assert sorted(path.name for path in (out / "samples").glob("*.png")) == run["grids"] == ["epoch_001.png", "epoch_002.png"]
    assert "fid" in json.loads((out / "final_metrics.json").read_text())
    log = (out / "device_check.log").read_text()
    assert "== gan_mnist_100_epochs:" in log and f"{out / 'device_check.json'} written" in log
