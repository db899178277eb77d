"""The kNN job: it reproduces the pretraining run's kNN monitor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrastive.jobs.knn import knn_eval
from tests.helpers.jobs import DATA, run_job_in


def test_knn_job_reproduces_the_pretraining_monitor(tmp_path: Path, pretrained_run: Path) -> None:
    metrics = run_job_in(
        tmp_path, knn_eval, "knn", f"pretrained={pretrained_run}", *DATA, "logger=none"
    )
    monitor = json.loads((pretrained_run / "metrics.json").read_text())
    assert metrics["knn/test_top1"] == pytest.approx(monitor["val/knn_top1"], abs=1e-6)
    assert metrics["knn/test_samples"] == monitor["val/knn_num_test_samples"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
