"""The GPU check of issue #32: every figure a lent GPU machine should give, in one run that fits its short loan.

Started by ``benchmarks/device_check.sh`` (which installs and unpacks first); writes ``OUT_DIR/device_check.json``,
rewritten after every part so that a run cut short still leaves what it measured:

  machine              the GPU (nvidia-smi), torch, CUDA and cuDNN versions, the CPU model;
  gan_mnist_throughput the MNIST GAN at batch 64, default widths (x 1/16 in the smoke run), in iterations (one D
                       and one G update) per second: the plain eager loop and genlab eager
                       (``benchmarks/gan_throughput.py``'s (a) and (b)), the plain loop captured whole as one CUDA
                       graph (capturable Adam, static input buffer; CUDA only), and
                       genlab captured (``model.compile: reduce-overhead`` on a GPU, ``default`` in the CPU smoke run),
                       with its first batch's time (the compiling);
  wgan_ring8, vae_mnist genlab's steps through ``train.py`` on their experiment files, callbacks and validation
                       as configured, timed by :class:`StepRate` after a warm-up;
  gan_mnist_100_epochs experiment (a) for 100 epochs through ``train.py`` (captured, where genlab captured ran on
                       the GPU; else eager): its wall time, how far it got, its grids and final_metrics.json copied
                       into OUT_DIR.

A GPU run shares out a time budget (``--budget`` seconds from ``--started``, the shell script's start, so the install
counts): each throughput part gets ``--part-seconds``, and the 100-epoch run comes last with ``--trainer.max_time`` set
to what is left. ``--smoke`` runs the same parts on the CPU in a few iterations each, to test the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L
import torch

from benchmarks.gan_throughput import IterationTimer, gan, genlab, genlab_timer, plain_pytorch, timed_rate
from cli.process_setup import flush_denormals_to_zero
from datamodules import MNISTDataModule

NO_CUDA = "skipped: no CUDA"
EPOCHS = 100


class StepRate(IterationTimer):
    """:class:`IterationTimer` for a ``train.py`` run: writes its training steps per second, and the minibatches
    per step of the run's datamodule, to ``out`` (JSON) when it stops the run; ``seconds`` None: no time limit."""

    def __init__(self, out: str, warmup: int, steps: int, seconds: float | None = None) -> None:
        super().__init__(warmup, steps, float("inf") if seconds is None else seconds)
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.should_stop and not Path(self.out).exists():
            group = getattr(trainer.datamodule.hparams, "minibatches_per_step", 1)
            rate = {"steps_per_s": self.timed / self.seconds, "timed_steps": self.timed, "minibatches_per_step": group}
            Path(self.out).write_text(json.dumps(rate))


def machine() -> dict:
    def nvidia_smi() -> str:
        try:
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            return subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            return f"none ({type(error).__name__})"

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return {
        "gpu": nvidia_smi(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "cpu": models[0] if models else platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def graphed_plain_loop(model, images: torch.Tensor, batch_size: int):
    """The plain loop's iteration with its whole D and G step captured as one CUDA graph and replayed: capturable
    Adam (its step counters on the GPU; foreach, where the eager loops' Adam is fused), the real batch copied into a
    static buffer before each replay."""
    device = "cuda"
    model.to(device)
    images = images.to(device)
    generator, discriminator, loss = model.generator, model.discriminator, model.adversarial_loss
    opt_g = torch.optim.Adam(generator.parameters(), **model.adam_g, capturable=True)
    opt_d = torch.optim.Adam(discriminator.parameters(), **model.adam_d, capturable=True)
    order = torch.randperm(len(images), device=device)
    static_real = images[:batch_size].clone()

    def step() -> None:  # gradients are never zeroed inside: each backward writes fresh ones into the graph's pool
        real = static_real.float().div(127.5).sub(1.0)
        with torch.no_grad():
            fake = generator(torch.randn(batch_size, model.latent_dim, device=device))
        real_scores, fake_scores = discriminator(torch.cat([real, fake])).split(batch_size)
        loss.discriminator(real_scores, fake_scores).backward()
        opt_d.step()
        discriminator.requires_grad_(False)
        loss.generator(discriminator(generator(torch.randn(batch_size, model.latent_dim, device=device)))).backward()
        opt_g.step()
        discriminator.requires_grad_(True)

    side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graphs asks; it also creates Adam's state
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    opt_d.zero_grad(set_to_none=True)
    opt_g.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()

    def iteration(number: int) -> None:
        static_real.copy_(images[order[(number * batch_size) % (len(images) - batch_size) :][:batch_size]])
        graph.replay()

    return iteration


def gan_throughput(args: argparse.Namespace, cuda: bool) -> dict:
    # The smoke run tests the script: hidden widths x 1/16 keep its compiling and timing short on a CPU.
    widths = 0.0625 if args.smoke else 1.0
    timing = argparse.Namespace(width=widths, batch_size=64, **vars(args.timing))

    def mnist() -> MNISTDataModule:
        datamodule = MNISTDataModule(data_dir=str(ROOT / "data"), batch_size=64, val_size=0)
        datamodule.setup("fit")
        return datamodule

    device = "cuda" if cuda else "cpu"

    def plain_graphed() -> float:
        return timed_rate(graphed_plain_loop(gan(timing), mnist().split_tensors("train")[0], 64), timing, "cuda")

    def genlab_captured() -> dict:
        """genlab with ``model.compile``: CUDA graphs on a GPU (``reduce-overhead``), inductor on the CPU."""
        timer = genlab_timer(mnist(), timing, accelerator="gpu" if cuda else "cpu", compile=capture_mode)
        return {"iterations_per_s": timer.timed / timer.seconds, "first_batch_s": timer.first_batch_seconds, "mode": capture_mode}

    def genlab_population() -> dict:
        """P = 10 members as one population (issue #33: >= 5x genlab_eager's iterations/s in member-iterations/s)."""
        seeds = list(range(10))
        datamodule = MNISTDataModule(data_dir=str(ROOT / "data"), batch_size=64, val_size=0, population_seeds=seeds)
        rate = genlab(datamodule, timing, accelerator="gpu" if cuda else "cpu", seeds=seeds)
        return {"member_iterations_per_s": len(seeds) * rate, "members": len(seeds)}

    capture_mode = "reduce-overhead" if cuda else "default"
    parts = {
        "plain_eager": lambda: {"iterations_per_s": plain_pytorch(mnist(), timing, device)},
        "genlab_eager": lambda: {"iterations_per_s": genlab(mnist(), timing, accelerator="gpu" if cuda else "cpu")},
        "plain_cuda_graph": lambda: {"iterations_per_s": plain_graphed()},
        "genlab_captured": genlab_captured,
        "genlab_population_10": genlab_population,
    }
    result = {"batch_size": 64, "widths": widths, "device": device}
    for name, run in parts.items():
        if name == "plain_cuda_graph" and not cuda:
            result[name] = NO_CUDA
            continue
        L.seed_everything(0, verbose=False)
        result[name] = attempt(run)
        print(f"gan_mnist_throughput {name}: {result[name]}", flush=True)
    return result


def attempt(part) -> dict | str:
    """A part's result, or its error as one line: one failing part must not cost the loan the others."""
    try:
        return part()
    except Exception as error:  # noqa: BLE001 (any failure is a finding to record, not a reason to stop)
        return f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def train(arguments: list[str], log_name: str, args: argparse.Namespace) -> tuple[float, int]:
    """``train.py fit`` with ``arguments`` in a fresh process, its output in the log; its wall time and exit status."""
    trainer = "configs/trainer/gpu.yaml" if args.cuda else "configs/trainer/cpu.yaml"
    command = [sys.executable, "-u", str(ROOT / "train.py"), "fit", *arguments[:2], "--trainer", trainer, *arguments[2:]]
    print(f"\n== {log_name}: {' '.join(command)}", flush=True)
    start = time.perf_counter()
    status = subprocess.run(command, cwd=ROOT, check=False).returncode
    return time.perf_counter() - start, status


def step_rate(name: str, config: str, args: argparse.Namespace, extra: list[str]) -> dict | str:
    """Training steps per second of ``train.py`` on ``config``, measured inside the run by :class:`StepRate`."""
    rate_file = Path(args.scratch, f"{name}_rate.json")
    timer = {"out": str(rate_file), "warmup": args.timing.warmup, "steps": args.timing.steps, "seconds": args.timing.seconds}
    timer_argument = "--trainer.callbacks+=" + json.dumps({"class_path": "benchmarks.device_check.StepRate", "init_args": timer})
    arguments = ["--config", config, "--run_name", name, "--trainer.default_root_dir", str(Path(args.scratch, name)),
                 "--trainer.logger", "false", "--trainer.max_steps", str(args.max_steps), *extra,
                 timer_argument]  # fmt: skip
    wall, status = train(arguments, name, args)
    if not rate_file.exists():
        return f"error: train.py exited with {status} before the timer stopped it"
    rate = json.loads(rate_file.read_text())
    rate["iterations_per_s"] = rate["steps_per_s"] * rate["minibatches_per_step"]
    return {**rate, "config": config, "process_wall_s": round(wall, 1), "exit_status": status}


def hundred_epochs(args: argparse.Namespace, remaining: float, compile: str) -> dict:
    """Experiment (a) for 100 epochs (the smoke test: 2 epochs of 3 batches), its step compiled with ``compile``,
    stopped by ``max_time`` at what is left of the budget; its grids and final_metrics.json copied into the output
    folder."""
    root = Path(args.scratch, "gan_mnist_100")
    arguments = ["--config", "configs/gan_mnist.yaml", "--run_name", "device_check", "--trainer.default_root_dir", str(root)]
    arguments += ["--model.init_args.compile", compile]
    if args.smoke:
        arguments += ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
                      "--trainer.callbacks.num_samples", "100", "--trainer.callbacks.num_real", "100"]  # fmt: skip
    max_time = max(60, int(remaining))
    arguments += ["--trainer.max_time", f"00:{max_time // 3600:02d}:{max_time // 60 % 60:02d}:{max_time % 60:02d}"]
    wall, status = train(arguments, "gan_mnist_100_epochs", args)
    checkpoints = sorted(root.rglob("epoch=*-step=*.ckpt"))
    epochs = int(checkpoints[-1].name.split("-")[0].split("=")[1]) + 1 if checkpoints else 0  # Lightning's {epoch}-{step}
    grids = sorted(root.rglob("samples/*.png"))
    (args.out / "samples").mkdir(exist_ok=True)
    for grid in grids:
        shutil.copy2(grid, args.out / "samples" / grid.name)
    metrics = sorted(root.rglob("final_metrics.json"))
    if metrics:
        shutil.copy2(metrics[0], args.out / "final_metrics.json")
    return {
        "compile": compile,
        "epochs_planned": 2 if args.smoke else EPOCHS,
        "epochs_done": epochs,
        "max_time_s": max_time,
        "wall_s": round(wall, 1),
        "exit_status": status,
        "grids": [grid.name for grid in grids],
        "final_metrics": "final_metrics.json" if metrics else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="output folder: device_check.json, samples/, final_metrics.json")
    parser.add_argument("--smoke", action="store_true", help="a few iterations of every part on the CPU")
    parser.add_argument("--started", type=float, default=time.time(), help="start of the whole check (Unix time)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check, install included")
    parser.add_argument("--part-seconds", type=float, default=15, help="timed seconds of each throughput part")
    parser.add_argument("--margin", type=float, default=45, help="seconds kept back for the 100-epoch run's last measurements")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:  # ~20 iterations of each part, however fast
        args.timing, args.max_steps = argparse.Namespace(warmup=3, steps=20, seconds=None), 200
    else:
        args.timing, args.max_steps = argparse.Namespace(warmup=50, steps=10**9, seconds=args.part_seconds), 10**7
    flush_denormals_to_zero()
    report = {"mode": "smoke (CPU)" if args.smoke else ("gpu" if args.cuda else "no CUDA: CPU"), "machine": machine()}
    report["budget"] = {"total_s": args.budget, "part_s": None if args.smoke else args.part_seconds, "margin_s": args.margin}
    path = args.out / "device_check.json"

    def write() -> None:
        report["elapsed_s"] = round(time.time() - args.started, 1)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"device_check: {path} written, {report['elapsed_s']} s since the start", flush=True)

    write()
    with tempfile.TemporaryDirectory(prefix="device_check_") as scratch:  # run folders (checkpoints) stay out of OUT_DIR
        args.scratch = scratch
        report["gan_mnist_throughput"] = gan_throughput(args, args.cuda)
        write()
        quick_vae = ["--model.init_args.test_samples", "2", "--trainer.callbacks.num_samples", "100"]
        quick_vae += ["--trainer.callbacks.num_real", "100"]
        report["wgan_ring8"] = attempt(lambda: step_rate("wgan_ring8", "configs/wgan_ring8_spectral_norm.yaml", args, []))
        write()
        vae_arguments = quick_vae if args.smoke else []
        report["vae_mnist"] = attempt(lambda: step_rate("vae_mnist", "configs/vae_mnist.yaml", args, vae_arguments))
        write()
        remaining = args.budget - (time.time() - args.started) - args.margin
        captured = isinstance(report["gan_mnist_throughput"].get("genlab_captured"), dict)
        compile = "reduce-overhead" if args.cuda and captured else "none"
        report["gan_mnist_100_epochs"] = attempt(lambda: hundred_epochs(args, remaining, compile))
        write()


if __name__ == "__main__":
    main()
