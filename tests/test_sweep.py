"""The sweep command: configs x seeds in parallel processes, one table, one side-by-side figure, resumable."""

import json
import subprocess
import sys

import pytest

from benchmarks.sweep import read_curve, read_points
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each sweep starts train.py in fresh processes

SHORT = ["--trainer.max_steps", "12", "--data.init_args.num_samples", "640"]



def sweep(tmp_path, configs, extra=(), parallel=("--jobs", "2")):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--configs", *configs, "--seeds", "0", "1", *parallel,
        "--out", str(tmp_path / "out"), "--metrics", "modes", "high_quality:%", "wall_seconds", "--figure", "landscape/iteration_*.png", "--", *SHORT, *extra,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_sweep_writes_table_results_and_figure_and_skips_finished_runs(tmp_path):
    configs = [str(ROOT / "configs" / f"wgan_ring8_{name}.yaml") for name in ("spectral_norm", "gradient_penalty")]
    result = sweep(tmp_path, configs)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    out = tmp_path / "out"
    rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| wgan_")]
    assert [row.split(" | ")[:2] for row in rows] == [["| wgan_ring8_spectral_norm", "2/2"], ["| wgan_ring8_gradient_penalty", "2/2"]]
    assert all(" ± " in cell for row in rows for cell in row.split(" | ")[2:])
    results = json.loads((out / "results.json").read_text())
    assert [run["seed"] for run in results["wgan_ring8_spectral_norm"]] == [0, 1]
    assert all(run["iteration"] == 10 for runs in results.values() for run in runs)
    assert (out / "side_by_side.png").stat().st_size > 10_000
    again = sweep(tmp_path, configs)  # every run has its final_metrics.json: nothing is trained again
    assert "done in" not in again.stdout and again.returncode == 0


def test_an_unfinished_run_continues_from_its_last_checkpoint(tmp_path):
    configs = [str(ROOT / "configs" / "wgan_ring8_spectral_norm.yaml")]
    first = sweep(tmp_path, configs, ["--trainer.max_steps", "6"])
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    run = tmp_path / "out" / "wgan_ring8_spectral_norm" / "seed_0"
    (run / "final_metrics.json").unlink()  # as if the first segment had been stopped before its end
    second = sweep(tmp_path, configs)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    assert f"wgan_ring8_spectral_norm seed 0: resuming from {run / 'checkpoints' / 'last.ckpt'}" in second.stdout
    assert "seed 1: resuming" not in second.stdout  # finished: not run again
    results = json.loads((run / "final_metrics.json").read_text())
    segments = json.loads((run / "segments.json").read_text())
    assert results["iteration"] == 10 and len(segments) == 2 and results["wall_seconds"] == pytest.approx(sum(segments))
    assert (run / "train.log").read_text().count("Restoring states from the checkpoint") == 1
    # the first segment's curve is kept beside the second's, and the sweep reads both
    assert (run / "metrics_segment_1.csv").is_file()
    epochs = [epoch for epoch, _ in read_curve(run, "train/d_loss_epoch")]
    assert epochs[0] == 1 and epochs[-1] == 5 and sorted(set(epochs)) == list(range(1, 6))


def test_a_failing_run_fails_the_sweep_and_names_its_log(tmp_path):
    result = sweep(tmp_path, [str(ROOT / "configs" / "wgan_ring8_spectral_norm.yaml")], ["--model.init_args.n_critic", "0"])
    assert result.returncode != 0
    assert "FAILED (genlab: error: model.n_critic" in result.stdout and "train.log" in result.stdout


def test_with_gpus_each_concurrent_run_sees_only_its_own_gpu(tmp_path):
    # No GPU here: the runs are told to train on the CPU after all (user args come last), and a
    # probe records what each process was given.
    configs = [str(ROOT / "configs" / "wgan_ring8_spectral_norm.yaml")]
    extra = ["--trainer.accelerator", "cpu", "--trainer.callbacks+=tests.probes.RecordDevice"]
    result = sweep(tmp_path, configs, extra, parallel=("--gpus", "3", "5"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "2 at a time on GPUs [3, 5]" in result.stdout
    records = [json.loads((tmp_path / "out" / "wgan_ring8_spectral_norm" / f"seed_{s}" / "device.json").read_text()) for s in (0, 1)]
    assert sorted(r["cuda_visible_devices"] for r in records) == ["3", "5"]
    assert {r["accelerator"] for r in records} == {"CPUAccelerator"}


def test_a_metric_logged_several_times_an_epoch_is_read_in_order_across_segments(tmp_path):
    (tmp_path / "metrics_segment_1.csv").write_text("epoch,step,train/running_loss,train/loss\n0,10,2.3,\n0,20,2.1,\n0,20,,2.2\n")
    (tmp_path / "metrics.csv").write_text("epoch,step,train/running_loss\n1,30,1.9\n1,40,1.8\n")
    assert read_points(tmp_path, "train/running_loss") == [(1, 2.3), (2, 2.1), (3, 1.9), (4, 1.8)]
    assert read_curve(tmp_path, "train/running_loss") == [(1, 2.3), (1, 2.1), (2, 1.9), (2, 1.8)]
