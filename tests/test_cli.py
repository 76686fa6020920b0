"""The command line as users run it: every config, W&B offline, DDP on two CPU processes, kill and resume."""

import csv
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from callbacks.sample_quality import ImageQualityMetrics, domain_classifier, stored_encoder
from core.commands import python_command
from datamodules import MNISTDataModule
from lightning_modules import GAN, WGAN
from lightning_modules.components.lipschitz import GradientPenalty
from tests.conftest import ROOT, require_real, run_cli
from tests.probes import signal_at_args

pytestmark = pytest.mark.slow  # every test here starts train.py in fresh processes

CONFIGS = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "configs").glob("*.yaml"))
FAST = ["--trainer.limit_train_batches", "6", "--trainer.enable_progress_bar", "false"]
# The image GAN configs end their callback list with SampleQuality: measure 1,000 samples, not 10,000.
# (``--trainer.callbacks.KEY`` sets the last callback listed so far, so these go before any ``callbacks+=``.)
SMALL_QUALITY = ["--trainer.callbacks.num_samples", "1000", "--trainer.callbacks.num_real", "1000"]


def data_args(data_root: Path) -> list[str]:
    return ["--data.init_args.data_dir", str(data_root)]


def needs_image_data(config: str) -> bool:
    """The 2-D mixture experiments (named for their mixture: ``ring8``, ``grid25``, ``mixture``) sample their data;
    the others read MNIST files."""
    return not any(mixture in Path(config).stem for mixture in ("ring8", "grid25", "mixture"))


def check(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def fit_ddp_with_rank_probe(config: str, tmp_path: Path, *args: str) -> tuple[dict, dict]:
    """``fit`` of ``configs/CONFIG.yaml`` in ``tmp_path`` under DDP on two CPU processes with ``ARGS``,
    CSV logs and :class:`tests.probes.RankProbe`: what rank 0 and rank 1 saved."""
    probe = tmp_path / "probe"
    check(
        run_cli(
            ["fit", "--config", str(ROOT / f"configs/{config}.yaml"), "--trainer", str(ROOT / "configs/trainer/ddp.yaml"),
             "--trainer.accelerator", "cpu", *args, "--trainer.logger", str(ROOT / "configs/logger/csv.yaml"),
             "--trainer.callbacks+=tests.probes.RankProbe", "--trainer.callbacks.out_dir", str(probe)],
            cwd=tmp_path,
        )
    )  # fmt: skip
    rank0, rank1 = (torch.load(probe / f"rank{r}.pt") for r in (0, 1))
    return rank0, rank1


@pytest.fixture(scope="module")
def fast_dev_runs(tmp_path_factory) -> dict[str, dict]:
    """Every config fitted for two steps by ``train.main`` in one fresh process (tests/fast_dev_runs.py)."""
    work = tmp_path_factory.mktemp("fast_dev_runs")
    mnist = require_real("MNIST/raw/train-images-idx3-ubyte")
    spec = [
        {
            "config": str(ROOT / config),
            "args": data_args(mnist) if needs_image_data(config) else [],
            "cwd": str(work / Path(config).stem),
        }
        for config in CONFIGS
    ]
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    runner = subprocess.run(
        [sys.executable, "-m", "tests.fast_dev_runs", str(work / "spec.json"), str(work / "results.json")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert runner.returncode == 0, runner.stderr[-6000:]
    return {
        str(Path(config).relative_to(ROOT)): result for config, result in json.loads((work / "results.json").read_text()).items()
    }


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_dev_run_of_every_config(config, fast_dev_runs):
    assert fast_dev_runs[config]["exit"] == 0, fast_dev_runs[config]["output"]


def test_one_epoch_writes_grid_curves_checkpoint_and_offline_wandb_run(real_mnist, tmp_path):
    args = ["--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "2", *FAST, *SMALL_QUALITY, *data_args(real_mnist)]
    result = check(run_cli(["fit", "--config", str(ROOT / "configs/gan_mnist.yaml"), *args], cwd=tmp_path))
    run_folder = "runs/gan_mnist/version_0"
    said = [line.removeprefix("genlab: ") for line in result.stdout.splitlines() if line.startswith("genlab: ")]
    assert said[0] == f"gan_mnist: training in {run_folder}/ — to epoch 1 (6 batches each); measured by SampleQuality."
    assert said[1] == "measuring sample quality of 1,000 generated images (FID, KID, IS, classes, precision/recall) ..."
    assert said[2].startswith("measured sample quality of 1,000 generated images")
    assert said[3].startswith("gan_mnist finished at epoch 1, step 12 (")
    assert said[4] == (
        f"outputs in {run_folder}/: checkpoints/last.ckpt, config.yaml, final_metrics.json, hparams.yaml, "
        "learning_curves.png, metrics.csv, samples/ (1 PNG: epoch_001.png)"
    )
    assert said[5].startswith("FID ") and "in the mnist classifier's features (real test images score 7.72;" in said[5]
    assert said[6].startswith("classes covered ") and " of 10, class KL " in said[6]
    (offline,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    assert said[7] == f"W&B run (offline): upload it with `wandb sync runs/wandb/{offline.name}`"
    python = "python" if python_command() == "python" else sys.executable  # the subprocess runs in tmp_path
    further = ["fit", "--config", str(ROOT / "configs/gan_mnist.yaml"), *args[2:], "--trainer.max_epochs", "2"]
    ckpt = f"{run_folder}/checkpoints/last.ckpt"
    assert said[8] == f"train further: {python} {ROOT / 'train.py'} {shlex.join(further)} --ckpt_path {ckpt}"
    run = tmp_path / "runs" / "gan_mnist" / "version_0"
    assert (run / "samples" / "epoch_001.png").stat().st_size > 1000
    assert (run / "learning_curves.png").stat().st_size > 1000
    assert (run / "checkpoints" / "last.ckpt").exists() and (run / "config.yaml").exists()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for name in ("d_loss", "g_loss", "d_real", "d_fake", "d_grad_norm", "g_grad_norm"):
        assert f"train/{name}_step" in rows[0] and f"train/{name}_epoch" in rows[0]
    # Step values on every 2nd of the 6 batches (log_every_n_steps 2), epoch means and quality at the end, all on one step axis.
    assert [int(row["step"]) for row in rows if row["train/d_loss_step"]] == [1, 3, 5]
    assert (
        [int(row["step"]) for row in rows if row["train/d_loss_epoch"]]
        == [int(row["step"]) for row in rows if row["quality/fid"]]
        == [5]
    )
    assert {"quality/fid", "quality/kid", "quality/inception_score", "quality/classes_covered", "quality/class_kl"} <= rows[
        0
    ].keys()
    assert len(json.loads((run / "final_metrics.json").read_text())["class_histogram"]) == 10
    (wandb_run,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    images = [p.name for p in (wandb_run / "files" / "media" / "images").iterdir()]
    assert any(name.startswith("samples_") for name in images) and any(name.startswith("learning_curves_") for name in images)
    assert list(wandb_run.glob("*.wandb"))
    # The W&B run carries the resolved config and the final metrics (offline: in its files, for `wandb sync`).
    assert (wandb_run / "files" / "config.yaml").read_text() == (run / "config.yaml").read_text()
    assert (wandb_run / "files" / "final_metrics.json").read_text() == (run / "final_metrics.json").read_text()


def test_ddp_two_cpu_processes_keep_identical_weights_on_disjoint_data_and_measure_the_whole_sample(real_mnist, tmp_path):
    rank0, rank1 = fit_ddp_with_rank_probe(
        "gan_mnist", tmp_path, "--trainer.max_epochs", "1", *FAST, *SMALL_QUALITY, *data_args(real_mnist)
    )
    assert rank0["state_dict"].keys() == rank1["state_dict"].keys()
    for name, weight in rank0["state_dict"].items():
        assert torch.equal(weight, rank1["state_dict"][name]), f"{name} differs across ranks"
    assert len(rank0["seen"]) == len(rank1["seen"]) == 6 * 64
    assert not set(rank0["seen"]) & set(rank1["seen"]), "the ranks saw overlapping samples"
    # Each rank measured half of the 1,000 samples and of the 1,000 real images; the reduced
    # metrics must be those of the whole sets, measured here in one process from the same weights.
    ddp = json.loads(next((tmp_path / "runs").rglob("final_metrics.json")).read_text())
    single = single_process_quality(rank0["state_dict"], real_mnist, num=1000)
    assert ddp["class_histogram"] == single["class_histogram"].tolist()
    for name in ("fid", "kid", "inception_score"):  # KID: subset size = sample size, so no random subsets
        assert ddp[name] == pytest.approx(single[name].item(), rel=1e-3), name
    for name in (
        "precision",
        "recall",
        "density",
        "coverage",
        "joint_precision",
        "joint_recall",
        "joint_density",
        "joint_coverage",
    ):
        assert ddp[name] == pytest.approx(single[name].item(), abs=1.5e-3), (
            name
        )  # a point of 1,000 may cross a ball's edge: float32 features of other batch splits


@pytest.mark.parametrize("config", ["vae_mnist_2d", "dae_mnist"])
def test_autoencoders_under_ddp_keep_identical_weights_on_disjoint_data_and_write_their_figures(config, real_mnist, tmp_path):
    rank0, rank1 = fit_ddp_with_rank_probe(
        config, tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "2",
        *FAST, *data_args(real_mnist), *(SMALL_QUALITY if config.startswith("vae") else []),
    )  # fmt: skip
    for name, weight in rank0["state_dict"].items():
        assert torch.equal(weight, rank1["state_dict"][name]), f"{name} differs across ranks"
    assert len(rank0["seen"]) == len(rank1["seen"]) == 6 * 128 and not set(rank0["seen"]) & set(rank1["seen"])
    run = next((tmp_path / "runs").rglob("final_metrics.json")).parent
    assert 0.1 < json.loads((run / "final_metrics.json").read_text())["latent_knn_accuracy"] <= 1.0
    expected = {"latent_confusion.png", "interpolation.png", "learning_curves.png"} | (
        {"latent_space.png", "latent_manifold.png"} if config == "vae_mnist_2d" else set()
    )
    assert expected <= {path.name for path in run.iterdir()} and list((run / "reconstructions").glob("epoch_001.png"))


def test_a_flow_under_ddp_keeps_identical_weights_and_measures_its_likelihood_and_samples(real_mnist, tmp_path):
    """ActNorm initialises from the first batch: under DDP from every rank's together, or the replicas part for good."""
    rank0, rank1 = fit_ddp_with_rank_probe(
        "flow_mnist", tmp_path, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "2",
        *FAST, *data_args(real_mnist), *SMALL_QUALITY,
    )  # fmt: skip
    for name, weight in rank0["state_dict"].items():
        assert torch.equal(weight, rank1["state_dict"][name]), f"{name} differs across ranks"
    assert len(rank0["seen"]) == len(rank1["seen"]) == 6 * 128 and not set(rank0["seen"]) & set(rank1["seen"])
    run = next((tmp_path / "runs").rglob("final_metrics.json")).parent
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test_nll"] == pytest.approx(final["test_bits_per_dim"] * 784 * math.log(2))
    assert 0.5 < final["test_bits_per_dim"] < 8 and final["fid"] > 0
    assert (run / "samples" / "epoch_001.png").is_file()


def single_process_quality(state_dict: dict, data_root: Path, num: int) -> dict:
    model = GAN()
    model.load_state_dict(state_dict)
    datamodule = MNISTDataModule(data_dir=str(data_root), val_size=0)
    datamodule.setup("fit")
    metrics = ImageQualityMetrics(domain_classifier(datamodule), kid_subset_size=num, encoder=stored_encoder(datamodule))
    metrics.add_real(datamodule.split_tensors("train")[0][:num].float() / 255)
    z, _ = model.fixed_inputs(num, torch.Generator().manual_seed(0))
    with torch.no_grad():
        images = datamodule.denormalize(model.eval().generate(z, None))
    metrics.add_generated(images)
    return metrics.compute(metrics.fidelity_spaces(datamodule.split_tensors("test")[0][:num].float() / 255))


def test_wgan_run_writes_metrics_landscape_and_offline_wandb_images(tmp_path):
    args = ["--trainer.max_steps", "24", "--data.init_args.num_samples", "1280", "--trainer.enable_progress_bar", "false"]
    check(run_cli(["fit", "--config", str(ROOT / "configs/wgan_grid25_gradient_penalty.yaml"), *args], cwd=tmp_path))
    run = tmp_path / "runs" / "wgan_grid25_gradient_penalty" / "version_0"
    assert json.loads((run / "final_metrics.json").read_text())["iteration"] == 20
    assert (run / "landscape" / "iteration_0000020.png").exists() and (run / "mixture_metrics.png").exists()
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {
        "eval/modes",
        "eval/high_quality",
        "eval/reverse_kl",
        "train/d_penalty_epoch",
        "train/wasserstein_estimate_epoch",
    } <= set(header)
    # The strategy is saved as an object with only its own arguments, and a checkpoint rebuilds it.
    checkpoint = run / "checkpoints" / "last.ckpt"
    hparams = torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    assert hparams["lipschitz"] == {
        "class_path": "lightning_modules.components.lipschitz.GradientPenalty",
        "init_args": {"weight": 10.0},
    }
    assert not {"gp_weight", "clip_value", "n_power_iterations"} & hparams.keys()
    assert isinstance(WGAN.load_from_checkpoint(checkpoint).lipschitz, GradientPenalty)
    (wandb_run,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    images = [p.name for p in (wandb_run / "files" / "media" / "images").iterdir()]
    assert any(name.startswith("landscape_") for name in images) and any(name.startswith("mixture_metrics_") for name in images)


def test_ddp_run_stopped_by_ctrl_c_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    """Ctrl+C reaches every rank of a DDP run: all ranks stop after the same batch and write one
    checkpoint with each rank's RNG state (Lightning's own SIGTERM handling hung here)."""

    def train(name, *extra):
        return run_cli(
            [
                "fit",
                "--config",
                str(ROOT / "configs/wgan_ring8_spectral_norm.yaml"),
                "--trainer",
                str(ROOT / "configs/trainer/ddp.yaml"),
                "--trainer.accelerator",
                "cpu",
                "--trainer.max_epochs",
                "2",
                "--trainer.enable_progress_bar",
                "false",
                "--data.init_args.num_samples",
                "5120",
                "--trainer.logger",
                str(ROOT / "configs/logger/csv.yaml"),
                "--run_name",
                name,
                *extra,
            ],
            cwd=tmp_path,
            timeout=300,
        )

    check(train("straight"))
    stopped = train("stopped", *signal_at_args(1, 3, "SIGINT"))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "stopped" / "version_0" / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "steps_taken": 4}]
    assert saved["rng_states_per_rank"]["cpu"].shape[0] == 2 and not torch.equal(*saved["rng_states_per_rank"]["cpu"])
    check(train("stopped", "--ckpt_path", str(checkpoint)))

    straight = torch.load(tmp_path / "runs" / "straight" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    resumed = torch.load(checkpoint, weights_only=False)  # the resume went on in version_0
    assert straight["global_step"] == resumed["global_step"] == 2 * 12
    for name, weight in straight["state_dict"].items():
        assert torch.equal(weight, resumed["state_dict"][name]), f"{name} differs after resuming"


@pytest.mark.parametrize("lipschitz", ["spectral_norm", "gradient_penalty"])
def test_wgan_under_ddp_keeps_identical_weights_with_its_lipschitz_strategy(lipschitz, tmp_path):
    """The hand-written renormalisation acts on each rank's replica; the penalty needs a double
    backward through DDP: both must leave the replicas identical."""
    rank0, rank1 = fit_ddp_with_rank_probe(
        f"wgan_ring8_{lipschitz}", tmp_path,
        "--trainer.max_steps", "12", "--trainer.enable_progress_bar", "false", "--data.init_args.num_samples", "5120",
    )  # fmt: skip
    for name, weight in rank0["state_dict"].items():
        assert torch.equal(weight, rank1["state_dict"][name]), f"{name} differs across ranks"
    assert len(rank0["seen"]) == 10 * 256 and not set(rank0["seen"]) & set(rank1["seen"])  # one epoch: disjoint shards


def train_gan_k5(data: Path, cwd: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    """(c), k = 5, three epochs of six batches on real MNIST, CSV only: the resume tests' run."""
    return run_cli(
        ["fit", "--config", str(ROOT / "configs/gan_mnist_k5.yaml"), "--trainer.max_epochs", "3", *FAST, *data_args(data),
         "--trainer.logger", str(ROOT / "configs/logger/csv.yaml"), "--run_name", name, *SMALL_QUALITY, *extra],
        cwd=cwd,
    )  # fmt: skip


def assert_same_training_state(straight_checkpoint: Path, resumed_checkpoint: Path) -> None:
    straight = torch.load(straight_checkpoint, weights_only=False)
    resumed = torch.load(resumed_checkpoint, weights_only=False)
    assert straight["global_step"] == resumed["global_step"] == 3 * (6 + 6 // 5)
    for name, weight in straight["state_dict"].items():
        assert torch.equal(weight, resumed["state_dict"][name]), f"{name} differs after resuming"
    for opt_a, opt_b in zip(straight["optimizer_states"], resumed["optimizer_states"]):
        for state_a, state_b in zip(opt_a["state"].values(), opt_b["state"].values()):
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_killed_run_resumed_from_checkpoint_ends_with_the_same_weights(real_mnist, tmp_path):
    check(train_gan_k5(real_mnist, tmp_path, "straight"))
    killed = train_gan_k5(
        real_mnist,
        tmp_path,
        "killed",
        "--trainer.callbacks+=tests.probes.KillAt",
        "--trainer.callbacks.epoch",
        "2",
        "--trainer.callbacks.batch",
        "3",
    )
    assert killed.returncode == -9  # SIGKILL: no clean shutdown, nothing flushed after epoch 2's checkpoint
    checkpoint = tmp_path / "runs" / "killed" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # written at the end of the 2nd epoch
    check(train_gan_k5(real_mnist, tmp_path, "killed", "--ckpt_path", str(checkpoint)))
    assert_same_training_state(tmp_path / "runs" / "straight" / "version_0" / "checkpoints" / "last.ckpt", checkpoint)


def test_run_stopped_by_ctrl_c_mid_epoch_then_killed_resumes_to_the_uninterrupted_weights(real_mnist, tmp_path):
    """Ctrl+C between two batches writes ``last.ckpt`` with the loader's place in the epoch and the RNG
    state, so the resumed run takes the epoch's remaining batches with the same noise; that run,
    SIGKILLed later (no clean shutdown), resumes from its last epoch-end checkpoint. All in version_0."""
    checkpoint = tmp_path / "runs" / "interrupted" / "version_0" / "checkpoints" / "last.ckpt"
    check(train_gan_k5(real_mnist, tmp_path, "straight"))
    stopped = train_gan_k5(real_mnist, tmp_path, "interrupted", *signal_at_args(0, 3, "SIGINT"))
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    saved = torch.load(checkpoint, weights_only=False)
    assert (saved["epoch"], saved["global_step"]) == (0, 4)  # batches 0-3 of epoch 0: four D steps
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "steps_taken": 4}]
    assert saved["rng_states_per_rank"]["cpu"].shape[0] == 1

    killed = train_gan_k5(
        real_mnist,
        tmp_path,
        "interrupted",
        "--ckpt_path",
        str(checkpoint),
        "--trainer.callbacks+=tests.probes.KillAt",
        "--trainer.callbacks.epoch",
        "2",
        "--trainer.callbacks.batch",
        "3",
    )
    assert killed.returncode == -9  # SIGKILL: no clean shutdown, nothing flushed after epoch 1's checkpoint
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1  # written at the end of the 2nd epoch
    check(train_gan_k5(real_mnist, tmp_path, "interrupted", "--ckpt_path", str(checkpoint)))
    assert sorted(path.name for path in (tmp_path / "runs" / "interrupted").iterdir()) == ["version_0"]
    assert_same_training_state(tmp_path / "runs" / "straight" / "version_0" / "checkpoints" / "last.ckpt", checkpoint)


def test_a_run_resumed_in_its_moved_folder_replaces_last_ckpt_instead_of_forking_it(real_mnist, tmp_path):
    """A study resumes each run in its own folder; from another clone or after a move, the checkpoint's
    recorded folder differs, and Lightning's default version counter then wrote ``last-v1.ckpt`` and
    left ``last.ckpt`` stale: the next resume silently lost the training in between."""

    def train(root, epochs, *extra):
        logger = {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(root), "name": "run", "version": "seed_0"},
        }
        return run_cli(["fit", "--config", str(ROOT / "configs/gan_mnist.yaml"), "--trainer.max_epochs", str(epochs),
                        *FAST, *SMALL_QUALITY, *data_args(real_mnist), "--trainer.logger", json.dumps(logger), *extra],
                       cwd=tmp_path)  # fmt: skip

    check(train(tmp_path / "first", 1))
    (tmp_path / "first").rename(tmp_path / "moved")
    checkpoints = tmp_path / "moved" / "run" / "seed_0" / "checkpoints"
    check(train(tmp_path / "moved", 2, "--ckpt_path", str(checkpoints / "last.ckpt")))
    assert not list(checkpoints.glob("last-v*.ckpt"))
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["epoch"] == 1  # the second epoch's
