"""The demo chain: pretrain -> linear probe (and the raw-pixel baseline) -> distil, then one
results table.

``python scripts/demo.py [pretrain overrides] [--common ...] [--probe ...] [--distill ...]``
runs each job as its own process (exactly the commands a user would type, so each gets its
own Hydra run directory and W&B run) under ``--out`` (default
``outputs/demo/<date>/<time>/``), and writes ``results.md`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

# (row label, job directory, metric key)
ROWS: tuple[tuple[str, str, str], ...] = (
    ("raw-pixel linear baseline", "pixels", "probe/test_top1"),
    ("kNN (k=200, T=0.1) on the pretrained backbone", "pretrain", "val/knn_top1"),
    ("linear probe on the pretrained backbone", "probe", "probe/test_top1"),
    ("distilled student (KL + CE)", "distill", "distill/student_top1"),
    ("CE-only student (same student, alpha=0)", "distill", "distill/ce_only_top1"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Pretrain -> linear probe -> distil, with one results table."
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for pretraining")
    parser.add_argument("--common", nargs="*", default=[], help="overrides for every job")
    parser.add_argument("--probe", nargs="*", default=[], help="overrides for the probe jobs")
    parser.add_argument("--distill", nargs="*", default=[], help="overrides for distillation")
    parser.add_argument("--out", type=Path, default=None, help="the demo's directory")
    return parser.parse_args(argv)


def run_job(script: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Run ``scripts/<script>`` with ``overrides`` in ``run_dir``; return its metrics.json.

    A failing job stops the chain with its exit status (its own message already printed).
    """
    command = [sys.executable, str(SCRIPTS / script), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"\n$ {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        print(f"\ndemo: {script} failed (exit {result.returncode}); see {run_dir}", file=sys.stderr)
        raise SystemExit(result.returncode)
    return json.loads((run_dir / "metrics.json").read_text())


def results_table(metrics: dict[str, dict[str, Any]]) -> str:
    """The markdown table of the chain's top-1 accuracies (a row per method)."""
    lines = ["| method | top-1 |", "| --- | --- |"]
    for label, job, key in ROWS:
        value = metrics.get(job, {}).get(key)
        lines.append(f"| {label} | {'n/a' if value is None else f'{100 * value:.2f}%'} |")
    return "\n".join(lines)


def log_results_to_wandb(out: Path, metrics: dict[str, dict[str, Any]], report: str) -> None:
    """Log the results table (a W&B Table plus the markdown) as a ``job_type=demo`` run in
    the W&B group of the chain's pretraining run; only when the jobs logged to W&B."""
    backbone = out / "pretrain" / "backbone.pt"
    if not (out / "pretrain" / "wandb").is_dir() or not backbone.is_file():
        return
    import wandb

    from contrastive.checkpoints import load_pretrained
    from contrastive.jobs.run import git_commit

    source = load_pretrained(backbone).provenance
    rows = [
        [label, metrics.get(job, {}).get(key)]
        for label, job, key in ROWS
        if metrics.get(job, {}).get(key) is not None
    ]
    run = wandb.init(
        project="contrastive",
        dir=str(out),
        group=source.wandb_group,
        job_type="demo",
        name=f"demo-{out.name}",
        mode="online" if os.environ.get("WANDB_MODE") == "online" else "offline",
        config={
            "demo_dir": str(out),
            "git_commit": git_commit(),
            "pretrain_config": source.config,
        },
    )
    run.log({"demo/results": wandb.Table(columns=["method", "top-1"], data=rows)})
    run.summary.update({f"demo/top1/{label}": value for label, value in rows})
    run.summary["demo/results_md"] = report
    run.finish()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out: Path = args.out or Path("outputs/demo") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out = out.resolve()
    started = time.perf_counter()
    metrics: dict[str, dict[str, Any]] = {}
    minutes: dict[str, float] = {}

    def step(name: str, script: str, overrides: list[str]) -> None:
        begun = time.perf_counter()
        metrics[name] = run_job(script, [*args.common, *overrides], out / name)
        minutes[name] = (time.perf_counter() - begun) / 60

    step("pretrain", "pretrain.py", args.overrides)
    step("pixels", "linear_probe.py", ["pretrained=pixels", *args.probe])
    step("probe", "linear_probe.py", [f"pretrained={out / 'pretrain'}", *args.probe])
    step("distill", "distill.py", [f"teacher={out / 'probe'}", *args.distill])

    table = results_table(metrics)
    distill = metrics["distill"]
    total = (time.perf_counter() - started) / 60
    report = "\n".join(
        [
            "# Demo results",
            "",
            table,
            "",
            f"Teacher (the linear probe) top-1 on the test set: "
            f"{100 * distill['distill/teacher_top1']:.2f}%; the distilled student agrees with "
            f"it on {100 * distill['distill/agreement']:.2f}% of test images "
            f"({distill['distill/student_params']:,} student parameters, "
            f"{distill['distill/teacher_params']:,} teacher parameters).",
            "",
            "| job | minutes | run directory |",
            "| --- | --- | --- |",
            *(f"| {name} | {minutes[name]:.1f} | `{out / name}` |" for name in minutes),
            f"| total | {total:.1f} | `{out}` |",
            "",
            "Commands: `python scripts/demo.py "
            + " ".join(sys.argv[1:] if argv is None else argv)
            + "`",
            "",
        ]
    )
    (out / "results.md").write_text(report)
    log_results_to_wandb(out, metrics, report)
    print(f"\n{table}\n\nResults table: {out / 'results.md'} ({total:.1f} min in all)")
