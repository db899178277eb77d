"""The demo chain (scripts/demo.py): pretrain, probe and distill on tiny data, one results
table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from contrastive.jobs.demo import ROWS
from tests.helpers.jobs import DATA, ROOT


def test_demo_chain_pretrain_probe_distill_on_tiny_data(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "trainer.max_epochs=1"]
    command += ["backbone.widths=[8,16]", "data.batch_size=64", "--out", str(out)]
    command += ["--common", *DATA, "logger=csv", "trainer.enable_progress_bar=false"]
    command += ["--probe", "trainer.max_epochs=3", "--distill", "trainer.max_epochs=1"]
    command += ["student.widths=[8]"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=280, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "results.md").read_text()
    for label, job, key in ROWS:
        value = json.loads((out / job / "metrics.json").read_text())[key]
        assert f"| {label} | {100 * value:.2f}% |" in report
    assert (out / "probe" / "probe_head.pt").is_file()
    assert "| total |" in report
