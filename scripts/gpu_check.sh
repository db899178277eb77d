#!/usr/bin/env bash
# One short check for a lent GPU machine (well under 5 minutes): the GPU-marked tests,
# then pretraining throughput and peak memory. Usage: bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export WANDB_MODE=offline WANDB_SILENT=true PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
$PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py || status=$?
$PY scripts/bench_throughput.py --device gpu --steps 40 --warmup 10 || status=$?
exit $status
