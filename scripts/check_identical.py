"""Check that a refactor changed no behaviour: run the same short jobs at two commits and
compare every tensor they wrote, bit for bit.

    python scripts/check_identical.py run OUT      # in each checkout, with its own venv
    python scripts/check_identical.py compare OUT_BEFORE OUT_AFTER

``run`` runs, as a user would, a 40-step default pretraining (Fashion-MNIST, W&B
offline), a 2-epoch linear probe on it and a 1-epoch distillation of that probe, each in
``OUT/<job>``. ``compare`` loads every ``.ckpt`` and ``.pt`` file of both trees (weights,
optimiser and scheduler state, loop and callback state, sampler position) and reports
every tensor or number that differs; the metric keys of ``metrics.json`` and of the W&B
history must match too, and their values except wall-clock times and throughputs. It
prints a table and exits 1 on any difference. Provenance strings (config, commit, paths)
are listed, not failed: a refactor may rename a config key.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
JOBS: tuple[tuple[str, str, list[str]], ...] = (
    ("pretrain", "pretrain.py", ["trainer.max_steps=40"]),
    ("probe", "linear_probe.py", ["pretrained={out}/pretrain", "trainer.max_epochs=2"]),
    ("distill", "distill.py", ["teacher={out}/probe", "trainer.max_epochs=1"]),
)
# Values that measure the machine, not the maths.
TIMING = ("seconds", "time/", "per_sec", "_sec", "throughput", "_runtime", "_timestamp")


def run(out: Path) -> None:
    out = out.resolve()
    for name, script, overrides in JOBS:
        command = [
            sys.executable,
            str(ROOT / "scripts" / script),
            *(o.format(out=out) for o in overrides),
            f"hydra.run.dir={out / name}",
        ]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a nested checkpoint payload, keyed by its path."""
    if isinstance(value, dict):
        items: dict[str, Any] = {}
        for key, inner in value.items():
            items.update(flatten(inner, f"{prefix}/{key}"))
        return items
    if isinstance(value, list | tuple):
        items = {}
        for index, inner in enumerate(value):
            items.update(flatten(inner, f"{prefix}[{index}]"))
        return items
    return {prefix: value}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def numeric(value: Any) -> bool:
    return isinstance(value, torch.Tensor | int | float) and not isinstance(value, bool)


def timing(key: str) -> bool:
    return any(word in key for word in TIMING)


def provenance(key: str) -> bool:
    """The composed config a file records (its keys may be renamed by a refactor)."""
    return key.startswith("/config/") or "/pretrain_config/" in key


def compared(key: str, value: Any) -> bool:
    return numeric(value) and not timing(key) and not provenance(key)


def history_keys(job_dir: Path) -> set[str] | None:
    sys.path.insert(0, str(ROOT))
    from tests.helpers.wandb_reader import read_run

    runs = sorted(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
    if not runs:
        return None
    keys: set[str] = set()
    for path in runs:
        for row in read_run(path).history:
            keys.update(k for k in row if not k.startswith("_"))
    return keys


def compare(before: Path, after: Path) -> int:
    rows: list[tuple[str, int, int, int]] = []
    notes: list[str] = []
    failed = 0
    for name, _, _ in JOBS:
        files = sorted(
            p.relative_to(before / name)
            for p in (before / name).rglob("*")
            if p.suffix in (".ckpt", ".pt") and "wandb" not in p.parts
        )
        for relative in files:
            a = flatten(torch.load(before / name / relative, weights_only=False))
            other = after / name / relative
            if not other.is_file():
                notes.append(f"{name}/{relative}: missing after")
                failed += 1
                continue
            b = flatten(torch.load(other, weights_only=False))
            tensors = differ = info = 0
            for key in sorted(set(a) | set(b)):
                if key not in a or key not in b:
                    where = "before" if key in a else "after"
                    if compared(key, a.get(key, b.get(key))):
                        differ += 1
                        notes.append(f"{name}/{relative}{key}: only {where}")
                    else:
                        info += 1
                    continue
                if compared(key, a[key]):
                    tensors += 1
                    if not same(a[key], b[key]):
                        differ += 1
                        notes.append(f"{name}/{relative}{key}: differs")
                elif not same(a[key], b[key]):
                    info += 1
            rows.append((f"{name}/{relative}", tensors, differ, info))
            failed += differ
        metrics_a = json.loads((before / name / "metrics.json").read_text())
        metrics_b = json.loads((after / name / "metrics.json").read_text())
        if set(metrics_a) != set(metrics_b):
            notes.append(f"{name}/metrics.json keys: {sorted(set(metrics_a) ^ set(metrics_b))}")
            failed += 1
        wrong = [k for k in metrics_a if not timing(k) and metrics_a[k] != metrics_b.get(k)]
        if wrong:
            notes.append(f"{name}/metrics.json values differ: {wrong}")
            failed += 1
        rows.append((f"{name}/metrics.json", len(metrics_a), len(wrong), 0))
        keys_a, keys_b = history_keys(before / name), history_keys(after / name)
        if keys_a != keys_b:
            notes.append(
                f"{name} W&B history keys differ: {sorted((keys_a or set()) ^ (keys_b or set()))}"
            )
            failed += 1
        rows.append((f"{name} W&B history keys", len(keys_a or ()), int(keys_a != keys_b), 0))
    print("| file | values compared | differ | provenance differences (not failed) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")
    for note in notes:
        print("-", note)
    print("IDENTICAL" if not failed else f"{failed} DIFFERENCES")
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run").add_argument("out", type=Path)
    pair = commands.add_parser("compare")
    pair.add_argument("before", type=Path)
    pair.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out)
    else:
        raise SystemExit(compare(args.before, args.after))


if __name__ == "__main__":
    main()
