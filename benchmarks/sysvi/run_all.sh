#!/usr/bin/env bash
# Reproduce benchmarks/results/sysvi/parity.{md,json}: every run is single-threaded; JOBS runs go in parallel
# (1 = one at a time, as the committed tables were made on a shared 2-core box).
# Usage: bash benchmarks/sysvi/run_all.sh [JOBS] [EPOCHS]   (from the repository root, with .venv)
#   EPOCHS empty (default) = max_epochs=None on both sides, scvi-tools' heuristic = 400 for these datasets;
#   `bash benchmarks/sysvi/run_all.sh 1 100` reproduces the 100-epoch history tables.
set -euo pipefail
JOBS=${1:-1}
EPOCHS=${2:-}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
EP_ARG=${EPOCHS:+--max-epochs $EPOCHS}
{
  for ds in pancreas cellbench pbmc68k; do for s in 0 1 2; do for impl in ref reference paper; do
    echo "run --dataset $ds --impl $impl --seed $s $EP_ARG"; done; done; done
  for s in 0 1 2; do for cfg in cvae cvae_kl5 vamp; do  # key-findings ablation (vamp_cyc = the parity runs)
    echo "run --dataset pancreas --impl reference --config $cfg --seed $s $EP_ARG"; done; done
} | xargs -P "$JOBS" -I{} sh -c "nice -n 10 $PY benchmarks/sysvi/parity.py {} > /dev/null 2>&1 || echo FAILED {}"
for ds in pancreas cellbench pbmc68k; do $PY benchmarks/sysvi/parity.py score --dataset "$ds" --epochs "${EPOCHS:-400}"; done
$PY benchmarks/sysvi/parity.py speed --dataset pancreas --epochs 20 --repeats 5
$PY benchmarks/sysvi/parity.py report --epochs "${EPOCHS:-400}"
