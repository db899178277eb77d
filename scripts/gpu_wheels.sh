#!/usr/bin/env bash
# The wheels the lent GPU machine lacks, into .whl/ (git-ignored), for scripts/gpu_check.sh.
# Run here, where the package registry is reachable: bash scripts/gpu_wheels.sh (or make gpu-wheels).
#
# That machine (kind nvidia-h200: Python 3.12, x86_64) holds torch, torchvision,
# pytorch-lightning, torchmetrics, numpy, pillow, rich, matplotlib, tensorboard, PyYAML,
# packaging, pytest and pytest-timeout (the package list in the device tool's KINDS.md), and
# reaches no registry. Of this project's runtime dependencies it lacks hydra-core, omegaconf
# (and their antlr4-python3-runtime), wandb, submitit and hydra-submitit-launcher. The check
# needs only the first three: W&B is imported only when logger=wandb (the check logs to CSV or
# not at all) and submitit only by SLURM launches. The benchmarks' peers (the bench extra:
# lightly, kornia and kornia's kornia-rs) come too, so their rows are measured on the GPU as
# well. torch is never carried: the check uses the machine's own build.
#
# When KINDS.md is readable (WORKPLACE_KINDS, default /work/.library/device/KINDS.md), the
# project's runtime dependencies and pytest are compared against its package list first, and
# the script stops if one is missing there and neither carried nor deliberately left out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=.whl
LIMIT_MIB=50
KINDS=${WORKPLACE_KINDS:-/work/.library/device/KINDS.md}

# name==version, as resolved in the dev environment (pip list).
CARRIED=(
    hydra-core==1.3.8
    omegaconf==2.3.1
    antlr4-python3-runtime==4.9.3 # sdist only on PyPI: built here, pure Python
    lightly==1.6.0                # bench peer (scripts/bench_loss.py, bench_augment.py)
    kornia==0.9.0                 # bench peer (scripts/bench_augment.py)
    kornia-rs==0.2.0              # kornia's binary dependency
)
LEFT_OUT="wandb submitit hydra-submitit-launcher"

if [ -r "$KINDS" ]; then
    "$PY" - "$KINDS" "${CARRIED[*]}" "$LEFT_OUT" <<'EOF'
import re
import sys
import tomllib

kinds, carried, left_out = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


text = open(kinds).read()
listed = re.search(r"nvidia-h200: .*?Packages: (.*?)\.\s*$", text, re.S | re.M)
if listed is None:
    sys.exit(f"{kinds}: no nvidia-h200 package list found")
there = {norm(n) for n in listed.group(1).split(", ")}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [re.split(r"[<>=!~\[; ]", d)[0] for d in project["dependencies"]] + ["pytest"]
missing = sorted(norm(n) for n in wanted if norm(n) not in there)
carried_names = {norm(c.split("==")[0]) for c in carried}
print("project dependencies missing on nvidia-h200:", ", ".join(missing) or "none")
uncovered = [n for n in missing if n not in carried_names and n not in map(norm, left_out)]
if uncovered:
    sys.exit(f"missing there and neither carried nor left out on purpose: {uncovered}")
EOF
else
    echo "($KINDS not readable: the carried list is not compared against the machine's)"
fi

rm -rf "$DEST" && mkdir -p "$DEST"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done
binary=() sdist=()
for spec in "${CARRIED[@]}"; do
    case $spec in
    antlr4-python3-runtime==*) sdist+=("$spec") ;;
    *) binary+=("$spec") ;;
    esac
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d "$DEST" "${binary[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" "${sdist[@]}" # pure Python: any interpreter builds it
rm -f "$DEST"/*.tar.gz

if ls "$DEST" | grep -iq '^torch'; then
    echo "error: a torch wheel landed in $DEST; the check must use the machine's torch" >&2
    exit 1
fi
count=$(ls "$DEST"/*.whl | wc -l)
if [ "$count" -ne "${#CARRIED[@]}" ]; then
    echo "error: $count wheels in $DEST for ${#CARRIED[@]} packages" >&2
    exit 1
fi
ls -l "$DEST"
bytes=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "$count wheels, $mib MiB in $DEST (limit $LIMIT_MIB MiB; the device tool carries 64 MiB in all)"
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "error: the wheels exceed $LIMIT_MIB MiB" >&2
    exit 1
fi
