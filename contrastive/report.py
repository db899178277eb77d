"""Runs compared without W&B: ``python scripts/report.py RUN_DIR [RUN_DIR ...] --out DIR``.

Each ``RUN_DIR`` is a job's run directory (with ``metrics.json``) or a folder of them (a
``make demo`` directory). The report is ``DIR/report.md``: a results table (one row per
run), ``curves.png`` with every run's loss and accuracy curves side by side (from each
run's ``media/history.jsonl``), and links to each run's own pictures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from contrastive.plots import draw_curves

# (column title, metrics.json key, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("kNN top-1", "val/knn_top1", "pct"),
    ("online top-1", "val/online_top1", "pct"),
    ("kNN job top-1", "knn/test_top1", "pct"),
    ("probe top-1", "probe/test_top1", "pct"),
    ("probe top-5", "probe/test_top5", "pct"),
    ("student top-1", "distill/student_top1", "pct"),
    ("CE-only top-1", "distill/ce_only_top1", "pct"),
    ("teacher agreement", "distill/agreement", "pct"),
    ("epochs", "train/epochs", "int"),
    ("views/s", "train/views_per_sec", "int"),
    ("minutes", "time/total_seconds", "min"),
)


def find_runs(paths: list[Path]) -> dict[str, Path]:
    """Run directories by display name: each path itself if it holds ``metrics.json``, else
    its subdirectories that do (named ``parent/child``)."""
    runs: dict[str, Path] = {}
    for path in paths:
        if (path / "metrics.json").is_file():
            runs[path.name if path.name not in runs else str(path)] = path
            continue
        children = sorted(p.parent for p in path.glob("*/metrics.json"))
        if not children:
            raise FileNotFoundError(
                f"{path} holds no metrics.json, directly or one level down; pass a run "
                "directory of scripts/pretrain.py, linear_probe.py, knn_eval.py or distill.py"
            )
        for child in children:
            runs[f"{path.name}/{child.name}"] = child
    return runs


def _format(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "min":
        return f"{value / 60:.1f}"
    return f"{value:,.0f}"


def results_table(metrics: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per run, the columns any run has."""
    columns = [c for c in COLUMNS if any(c[1] in m for m in metrics.values())]
    lines = [
        "| run | " + " | ".join(title for title, _, _ in columns) + " |",
        "| --- |" + " --- |" * len(columns),
    ]
    for name, values in metrics.items():
        cells = [_format(values[k], kind) if k in values else "" for _, k, kind in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_history(run: Path) -> list[dict[str, float]]:
    path = run / "media" / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_report(paths: list[Path], out: Path) -> Path:
    """Write ``out/report.md`` (+ ``out/curves.png``) for the runs under ``paths``."""
    runs = find_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in runs.items()}
    lines = ["# Run report", "", results_table(metrics), ""]
    histories = {name: h for name, run in runs.items() if (h := read_history(run))}
    if histories:
        draw_curves(histories, out / "curves.png")
        lines += ["## Curves", "", "![loss and accuracy curves](curves.png)", ""]
    for name, run in runs.items():
        pictures = sorted((run / "media").glob("*.png")) + sorted(run.glob("*.png"))
        if pictures:
            lines += [f"## {name}", "", f"`{run.resolve()}`", ""]
            lines += [f"![{p.stem}]({p.resolve()})" for p in pictures]
            lines.append("")
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories or folders of them")
    parser.add_argument("--out", type=Path, default=Path("report"), help="report directory")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.runs, args.out)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"report: {report}")
