"""The linear-probe job: metrics and a real confusion matrix, the raw-pixel baseline, the
augmented probe, bad input. (The LinearProbe module: tests/methods/test_linear_probe.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from contrastive.checkpoints import load_teacher
from contrastive.errors import ConfigError
from contrastive.jobs.linear_probe import linear_probe
from tests.helpers.jobs import DATA, QUIET, run_job_in, run_script
from tests.helpers.markers import needs_fashion_mnist


def test_raw_pixel_probe_learns_the_synthetic_classes(tmp_path: Path) -> None:
    metrics = run_job_in(
        tmp_path,
        linear_probe,
        "linear_probe",
        "pretrained=pixels",
        *DATA,
        "probe.optimizer.lr=1e-2",
        "trainer.max_epochs=10",
        *QUIET,
    )
    assert metrics["probe/test_top1"] > 0.5  # chance is 0.1
    teacher = load_teacher(tmp_path)  # a run dir like any other probe's
    assert teacher.head is not None
    assert teacher.spec["name"] == "pixels" and teacher.head.module.linear.in_features == 28 * 28


def test_augmented_probe_trains_on_the_fly(tmp_path: Path, pretrained_run: Path) -> None:
    metrics = run_job_in(
        tmp_path,
        linear_probe,
        "linear_probe",
        f"pretrained={pretrained_run}",
        *DATA,
        "probe.augment=true",
        "probe.optimizer.lr=1e-2",
        "trainer.max_epochs=3",
        *QUIET,
    )
    assert metrics["probe/test_top1"] > 0.2


PROBE = [
    "data=synthetic",
    "data.source.num_samples=256",
    "probe.batch_size=32",
    "probe.optimizer.lr=1e-2",
    "trainer.max_epochs=10",
    *QUIET,
]


def test_probe_job_writes_metrics_and_a_real_confusion_matrix(
    compose_cfg: Any, tmp_path: Path, pretrained_run: Path
) -> None:
    cfg = compose_cfg(f"pretrained={pretrained_run}", *PROBE, config_name="linear_probe")
    metrics = linear_probe(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    for key in ("probe/test_top1", "probe/test_top5", "probe/test_nll"):
        assert key in written
    assert written["probe/test_samples"] == 64  # the synthetic test split
    assert written["probe/test_top1"] > 0.5  # learnable classes, chance is 0.1
    assert len([k for k in written if k.startswith("probe/test_class_top1/")]) == 10
    pixels = np.asarray(Image.open(tmp_path / "confusion_matrix.png").convert("L"), dtype=float)
    assert pixels.std() > 10  # a drawn matrix, not a blank canvas


@needs_fashion_mnist
def test_number_of_classes_that_does_not_match_the_data(
    compose_cfg: Any, pretrained_run: Path
) -> None:
    cfg = compose_cfg(
        f"pretrained={pretrained_run}", "data.num_classes=3", *QUIET, config_name="linear_probe"
    )
    with pytest.raises(ConfigError, match=r"data.num_classes=3 .* set data.num_classes=10"):
        linear_probe(cfg)


def test_cli_garbage_checkpoint_is_one_clear_message(tmp_path: Path) -> None:
    garbage = tmp_path / "backbone.pt"
    garbage.write_bytes(b"\x00garbage")
    result = run_script("linear_probe.py", f"pretrained={garbage}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{garbage} is not a readable checkpoint" in result.stderr
