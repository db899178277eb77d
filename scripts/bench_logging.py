"""What logging costs: the default pretraining with W&B and pictures on, and with them off.

Runs ``scripts/pretrain.py`` (the default Fashion-MNIST experiment, as ``make demo`` runs it)
in alternating order, ABBA: on, off, off, on, ... so slow drift on a shared machine falls
on both sides. "off" is ``logger=none ~callbacks.media ~callbacks.health``. Each run is
timed by the job itself (``time/total_seconds`` in its ``metrics.json``: the whole job,
W&B start-up and the pictures included) and by the CPU seconds (user + system) of its
process tree, W&B's ``wandb-core`` service included. Prints a markdown table.

    python scripts/bench_logging.py                   # 2 runs per side, 6 epochs (~30 min)
    python scripts/bench_logging.py --pairs 1 trainer.max_epochs=1 \
        trainer.check_val_every_n_epoch=1            # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = {
    "on": [],
    "off": ["logger=none", "~callbacks.media", "~callbacks.health"],
}


def run_once(side: str, overrides: list[str], workdir: Path, index: int) -> dict[str, float]:
    run_dir = workdir / f"{index:02d}-{side}"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "pretrain.py"),
        f"hydra.run.dir={run_dir}",
        *SIDES[side],
        *overrides,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{side} run {index} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "job_s": metrics["time/total_seconds"],
        "process_s": wall,
        "cpu_s": cpu,
        "views_per_sec": metrics.get("train/views_per_sec", float("nan")),
        "knn_top1": metrics.get("val/knn_top1", float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="runs per side")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error(f"--pairs must be >= 1, got {args.pairs}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_logging_"))
    order = [
        side for i in range(args.pairs) for side in (("on", "off") if i % 2 == 0 else ("off", "on"))
    ]
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for index, side in enumerate(order):
        result = run_once(side, args.overrides, workdir, index)
        results[side].append(result)
        print(
            f"run {index + 1}/{len(order)} {side:>3}: job {result['job_s']:.1f} s, "
            f"process {result['process_s']:.1f} s, CPU {result['cpu_s']:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    cpu_name = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else "unknown CPU"
    )
    print(
        f"\n{cpu_name}, {os.cpu_count()} cores; overrides: {' '.join(args.overrides) or '(none)'}"
    )
    print(f"runs in {workdir}, order {' '.join(order)}\n")
    columns = ("job_s", "process_s", "cpu_s", "views_per_sec", "knn_top1")
    print("| logging | runs | " + " | ".join(f"median {c}" for c in columns) + " |")
    print("| --- | --- |" + " --- |" * len(columns))
    medians = {
        side: {c: statistics.median(r[c] for r in runs) for c in columns}
        for side, runs in results.items()
    }
    for side in ("off", "on"):
        cells = " | ".join(f"{medians[side][c]:,.4g}" for c in columns)
        print(f"| {side} | {len(results[side])} | {cells} |")
    for c in ("job_s", "process_s", "cpu_s"):
        print(f"\non/off {c}: {medians['on'][c] / medians['off'][c]:.3f}", end="")
    print(
        "\nper run (job_s): "
        + ", ".join(f"{side} {r['job_s']:.1f}" for side in ("off", "on") for r in results[side])
    )


if __name__ == "__main__":
    main()
