#!/usr/bin/env bash
# The GPU check (issue 11, item 8): one prepared run for a lent GPU machine, under 5 minutes.
#
#   1. device: nvidia-smi, torch, CUDA;
#   2. wheels: installs the carried wheels of .whl/ (bash scripts/gpu_wheels.sh makes them;
#      never torch: the machine's own build is used) into a private folder, then puts this
#      checkout first on PYTHONPATH (no pip install of the project);
#   3. tests: pytest -m gpu tests/test_gpu.py (blocked vs dense InfoNCE at 2N = 4096 and 8192,
#      bf16, torch.compile, every data path and the views' two backends on CUDA);
#   4-7. the throughput table: bench_loss (2N up to 65536), bench_augment, bench_train
#      (fp32 and bf16-mixed) and bench_throughput, on the GPU.
#
# Everything is logged to $OUT/gpu_check.log ($OUT: the device tool's folder; ./ without it),
# the benchmarks' tables go to $OUT/gpu_table.md, and a summary of the phases ends the log.
# Each phase runs under `timeout`, inside one overall deadline (GPU_CHECK_BUDGET_S, 285 s).
#
# Through the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=420)
# A dry run of the plumbing on a machine without a GPU (GPU tests skip, CPU-sized benchmarks):
#   GPU_CHECK_ALLOW_CPU=1 PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
ALLOW_CPU=${GPU_CHECK_ALLOW_CPU:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-285}
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/gpu-check-site}
OUTDIR=${OUT:-.}
mkdir -p "$OUTDIR"
LOG=$OUTDIR/gpu_check.log
TABLE=$OUTDIR/gpu_table.md
: >"$LOG"
: >"$TABLE"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
export WANDB_MODE=offline WANDB_SILENT=true WANDB_DIR=${TMPDIR:-/tmp}
export PY ALLOW_CPU SITE ROOT # for the phases run as functions
START=$SECONDS
PHASES=() FAILED=0

# run_phase NAME CAP_S COMMAND...: the command under timeout (its cap, or what is left of the
# budget), its status recorded for the summary.
run_phase() {
    local name=$1 cap=$2 left status started
    shift 2
    left=$((BUDGET - (SECONDS - START) - 5))
    if [ "$left" -lt 10 ]; then
        PHASES+=("$(printf '%-14s %-8s %4ss' "$name" skipped 0)  (budget spent)")
        FAILED=1
        return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo
    echo "=== [$name] (timeout ${cap}s) $*"
    if declare -F "$1" >/dev/null; then # a function of this script: timeout needs a program
        set -- bash -c "set -euo pipefail; $(declare -f "$1"); $1"
    fi
    started=$SECONDS
    status=0
    timeout --signal=TERM --kill-after=10 "$cap" "$@" || status=$?
    local result=pass
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        result=timeout
    elif [ "$status" -ne 0 ]; then
        result="fail($status)"
    fi
    [ "$result" = pass ] || FAILED=1
    PHASES+=("$(printf '%-14s %-8s %4ss' "$name" "$result" $((SECONDS - started)))")
}

# bench NAME CAP_S SCRIPT ARGS...: a benchmark phase; its stdout (the table) is also appended
# to the table file under a heading that names the command.
bench() {
    local name=$1 cap=$2 script=$3 out
    shift 3
    out=$(mktemp)
    run_phase "$name" "$cap" bash -c 'set -o pipefail; "$@" | tee "$0"' "$out" "$PY" "$script" "$@"
    {
        echo "## $name: \`python $script $*\`"
        echo
        grep -v '^$' "$out" || echo "(no table: see gpu_check.log)"
        echo
    } >>"$TABLE"
    rm -f "$out"
}

summary() {
    echo
    echo "=== summary ($((SECONDS - START)) s of a ${BUDGET} s budget; log $LOG, tables $TABLE)"
    local line
    for line in "${PHASES[@]}"; do echo "  $line"; done
    [ "$FAILED" -eq 0 ] && echo "GPU CHECK: PASS" || echo "GPU CHECK: FAIL"
}
finish() {
    local status=$?
    summary
    exec 1>&- 2>&-
    wait "$TEE_PID" 2>/dev/null || true # the log's last lines written before the tool reads it
    exit "$status"
}
trap finish EXIT

echo "=== gpu_check at $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git status --porcelain 2>/dev/null | grep -q . && echo '(uncommitted changes)')" \
    "on $(hostname), $(date -u +%FT%TZ)"

# --- 1. the device -----------------------------------------------------------------------
device_info() {
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ||
        echo "(nvidia-smi: not available)"
    "$PY" - <<'EOF'
import sys
try:
    import torch, torchvision
except ImportError as error:
    sys.exit(f"error: this machine's python ({sys.executable}) lacks {error.name}; the check "
             "uses the machine's own torch and torchvision and never carries them")
print(f"python {sys.version.split()[0]} ({sys.executable})")
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
          f"compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs")
else:
    print("device: no CUDA device visible to torch")
EOF
}
run_phase device 30 device_info
if [ "$FAILED" -ne 0 ]; then exit 1; fi
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    if [ "$ALLOW_CPU" != 1 ]; then
        echo "error: torch sees no CUDA device (GPU_CHECK_ALLOW_CPU=1 runs the plumbing on CPU)"
        FAILED=1
        exit 1
    fi
    echo "GPU_CHECK_ALLOW_CPU=1: no CUDA device, so the GPU tests skip and the benchmarks run CPU-sized"
    GPU=0
else
    GPU=1
fi

# --- 2. the carried wheels and the project --------------------------------------------------
install_wheels() {
    shopt -s nullglob
    local wheels=(.whl/*.whl) keep=() wheel
    shopt -u nullglob
    for wheel in "${wheels[@]}"; do
        case $(basename "$wheel") in
        torch-* | torchvision-* | torchaudio-* | triton-* | nvidia_*)
            echo "not installing $wheel: the machine's torch stack is used" ;;
        *) keep+=("$wheel") ;;
        esac
    done
    if [ "${#keep[@]}" -eq 0 ]; then
        echo "no wheels in .whl/ (bash scripts/gpu_wheels.sh makes them; carry=[\".whl\"])"
    else
        # Wheels that are not for this interpreter fail the check on the GPU machine; a CPU
        # dry run under another Python skips them.
        local usable
        usable=$("$PY" - "$ALLOW_CPU" "${keep[@]}" <<'EOF'
import sys
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

allow_cpu, wheels = sys.argv[1] == "1", sys.argv[2:]
supported = set(sys_tags())
for wheel in wheels:
    if parse_wheel_filename(Path(wheel).name)[3] & supported:
        print(wheel)
    elif allow_cpu:
        print(f"skipping {wheel}: not for this interpreter (dry run)", file=sys.stderr)
    else:
        sys.exit(f"error: {wheel} is not for this interpreter ({sys.version.split()[0]})")
EOF
        )
        rm -rf "$SITE"
        mapfile -t keep <<<"$usable"
        if [ -n "${keep[*]}" ]; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "${keep[@]}"
            echo "installed ${#keep[@]} wheels into $SITE"
        fi
    fi
    PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH} "$PY" - <<'EOF'
import importlib
import sys

needed = ["torch", "torchvision", "pytorch_lightning", "torchmetrics", "hydra", "omegaconf",
          "numpy", "PIL", "yaml", "pytest", "contrastive"]
optional = ["pytest_timeout", "lightly", "kornia", "wandb", "submitit"]
missing = []
for name in needed + optional:
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        print(f"  {name}: MISSING ({error})")
        if name in needed:
            missing.append(name)
        continue
    print(f"  {name} {getattr(module, '__version__', '')} {getattr(module, '__file__', '')}")
if missing:
    sys.exit(f"error: missing {missing}; carry them as wheels (bash scripts/gpu_wheels.sh)")
EOF
}
run_phase wheels 60 install_wheels
if [ "$FAILED" -ne 0 ]; then exit 1; fi
export PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}

# --- 3. the GPU tests ----------------------------------------------------------------------
pytest_args=(-m gpu tests/test_gpu.py -p no:cacheprovider -q -rA)
if "$PY" -c 'import pytest_timeout' 2>/dev/null; then
    pytest_args+=(--timeout=90) # per test
fi
run_phase tests 150 "$PY" -m pytest "${pytest_args[@]}"

# --- 4-7. the throughput table -------------------------------------------------------------
if [ "$GPU" = 1 ]; then
    WORKERS=$(($(nproc) < 8 ? $(nproc) : 8))
    bench bench_loss 35 scripts/bench_loss.py --device cuda --sizes 4096 16384 65536 --repeats 3
    bench bench_augment 35 scripts/bench_augment.py --device cuda --batches 4 --repeats 3 \
        --workers "$WORKERS"
    bench bench_train 50 scripts/bench_train.py --device gpu --synthetic \
        --cases ours "ours + bf16-mixed" --steps 30 --warmup 8 --repeats 1
    bench throughput 60 scripts/bench_throughput.py --device gpu --steps 20 --warmup 5
else # the dry run: the same phases, CPU-sized
    bench bench_loss 40 scripts/bench_loss.py --device cpu --sizes 256 1024 --repeats 1
    bench bench_augment 30 scripts/bench_augment.py --device cpu --batches 1 --repeats 1 \
        --workers 1
    bench bench_train 45 scripts/bench_train.py --device cpu --synthetic --cases ours \
        --steps 6 --warmup 2 --repeats 1 --workers 0
    bench throughput 45 scripts/bench_throughput.py --device cpu --steps 4 --warmup 2
fi
[ "$FAILED" -eq 0 ]
