#!/usr/bin/env bash
# Reproduce benchmarks/results/sysvi/parity.{md,json}: every run is single-threaded; JOBS runs go in parallel.
# Usage: bash benchmarks/sysvi/run_all.sh [JOBS] [EPOCHS]   (from the repository root, with .venv)
set -euo pipefail
JOBS=${1:-3}
EPOCHS=${2:-100}  # the parity runs use 100 (CPU budget); scvi-tools default heuristic = 400
PY=${PYTHON:-.venv/bin/python}
{
  for ds in pancreas cellbench; do for s in 0 1 2; do for impl in ref reference paper; do
    echo "run --dataset $ds --impl $impl --seed $s --max-epochs $EPOCHS"; done; done; done
  for s in 0 1; do for cfg in cvae cvae_kl5 vamp; do  # ablations: 2 seeds (CPU budget)
    echo "run --dataset pancreas --impl reference --config $cfg --seed $s --max-epochs $EPOCHS"; done; done
} | xargs -P "$JOBS" -I{} sh -c "$PY benchmarks/sysvi/parity.py {} > /dev/null 2>&1 || echo FAILED {}"
for ds in pancreas cellbench; do $PY benchmarks/sysvi/parity.py score --dataset "$ds"; done
$PY benchmarks/sysvi/parity.py speed --dataset pancreas --epochs 8 --repeats 3
$PY benchmarks/sysvi/parity.py report
