#!/usr/bin/env bash
# The GPU check of issue #32 (docs/benchmarks.md, "GPU check"): one command for a lent GPU machine, from a bare one.
#   bash benchmarks/device_check.sh [--smoke] [OUT_DIR]     OUT_DIR: the argument, else $OUT, else runs/device_check
# Installs (make setup) and unpacks the data (make data) if needed, then runs benchmarks/device_check.py within 8 minutes
# of its start; everything it prints goes to OUT_DIR/device_check.log, its figures to OUT_DIR/device_check.json.
# --smoke: the same parts on the CPU, a few iterations each (tests/test_benchmark.py).
set -euo pipefail
started=$(date +%s)
smoke=()
out=""
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=(--smoke) ;;
    *) out="$arg" ;;
  esac
done
out="${out:-${OUT:-runs/device_check}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$(dirname "$0")/.."
{
  echo "device_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), output in $out"
  make setup
  make data
  .venv/bin/python -u benchmarks/device_check.py "$out" --started "$started" "${smoke[@]}"
} 2>&1 | tee "$out/device_check.log"
