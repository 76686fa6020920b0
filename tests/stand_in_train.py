"""A stand-in for ``train.py fit`` in the study tests: the same command line, a run in a tenth of a second.

The config file (YAML) says what the run does: ``score`` (its final metric, plus the seed and any
``--x`` override), ``sleep`` (seconds, so that a test can stop a worker mid-run) or ``fail`` (a
message, printed as train.py prints a user error). Like train.py it refuses a run folder that exists
unless it resumes. Given ``--model.init_args.seeds`` it writes a population's folder (``member_<p>/``, member
columns in ``metrics.csv``). Each start appends one JSON line to ``starts.log`` beside the config: a test
counts the runs that really started, not only what the database says.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

parser = argparse.ArgumentParser()
parser.add_argument("--config", type=Path, required=True)
parser.add_argument("--seed_everything", type=int, required=True)
parser.add_argument("--trainer.logger", dest="logger", required=True)
parser.add_argument("--ckpt_path")
parser.add_argument("--x", type=float, default=0.3)
parser.add_argument("--model.init_args.seeds", dest="seeds", type=json.loads)
args, _ = parser.parse_known_args()
spec = yaml.safe_load(args.config.read_text()) or {}
csv_logger = json.loads(args.logger)[0]["init_args"]
run_dir = Path(csv_logger["save_dir"]) / csv_logger["name"] / csv_logger["version"]
start = {
    "config": args.config.stem,
    "seed": args.seed_everything,
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "argv": sys.argv[1:],
}
with (args.config.parent / "starts.log").open("a") as log:
    log.write(json.dumps(start) + "\n")
if "fail" in spec:
    sys.exit(f"genlab: error: {spec['fail']}")
run_dir.mkdir(parents=True, exist_ok=args.ckpt_path is not None)
time.sleep(spec.get("sleep", 0.0))
if args.seeds is None:
    score = spec.get("score", 0.0) + args.seed_everything - (args.x - 0.3) ** 2
    (run_dir / "final_metrics.json").write_text(json.dumps({"score": score, "seed": args.seed_everything}))
else:  # a population, as train.py writes one: each member's folder, its metrics as <name>/member_<p> beside their mean
    scores = [spec.get("score", 0.0) + seed - (args.x - 0.3) ** 2 for seed in args.seeds]
    columns = ["epoch", "step", "score", *[f"score/member_{p}" for p in range(len(scores))]]
    rows = [
        [str(epoch), str(epoch), str(sum(scores) / len(scores) + epoch), *[str(s + epoch) for s in scores]] for epoch in range(2)
    ]
    (run_dir / "metrics.csv").write_text("\n".join(",".join(row) for row in [columns, *rows]) + "\n")
    for member, (seed, score) in enumerate(zip(args.seeds, scores)):
        (run_dir / f"member_{member}").mkdir()
        (run_dir / f"member_{member}" / "final_metrics.json").write_text(json.dumps({"score": score, "seed": seed}))
