"""The distillation job, logits and representation (SEED) modes, and its bad input: a
teacher without a probe head, a class count or settings that do not fit. (The modules:
tests/methods/test_distillation.py; teacher directories: tests/test_checkpoints.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contrastive.checkpoints import CheckpointError, load_teacher
from contrastive.errors import ConfigError
from contrastive.jobs.distill import distill
from tests.helpers.jobs import DATA, QUIET, run_job_in, run_script

DISTILL = [
    *DATA,
    "data.batch_size=32",
    "distill.optimizer.lr=1e-2",
    "student.widths=[8,16]",
    *QUIET,
]


# --- the job -----------------------------------------------------------------------------
def test_distill_job_reports_both_students_and_the_teacher_it_loaded(
    tmp_path: Path, probe_run: Path
) -> None:
    metrics = run_job_in(
        tmp_path, distill, "distill", f"teacher={probe_run}", "trainer.max_epochs=6", *DISTILL
    )
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == pytest.approx(metrics)
    probe = json.loads((probe_run / "metrics.json").read_text())
    # the teacher rebuilt from backbone.pt + probe_head.pt scores what the probe scored
    assert written["distill/teacher_top1"] == pytest.approx(probe["probe/test_top1"])
    for run in ("student", "ce_only"):
        assert 0 <= written[f"distill/{run}_agreement"] <= 1
        assert written[f"distill/{run}_test_kl"] >= 0
        assert written[f"distill/{run}_top1"] > 0.2  # 10 learnable classes, chance 0.1
    assert written["distill/agreement"] == written["distill/student_agreement"]
    assert written["distill/gain_over_ce_only"] == pytest.approx(
        written["distill/student_top1"] - written["distill/ce_only_top1"]
    )
    assert written["distill/student_params"] < written["distill/teacher_params"]
    # the student is saved as a teacher directory of its own
    teacher = load_teacher(tmp_path / "student")
    assert teacher.head is not None
    assert teacher.head.module.linear.out_features == 10 and teacher.spec["name"] == "small_cnn"


def test_representation_mode_probes_the_student(tmp_path: Path, probe_run: Path) -> None:
    written = run_job_in(
        tmp_path,
        distill,
        "distill",
        f"teacher={probe_run}",
        "distill=representation",
        "distill.queue_size=64",
        "trainer.max_epochs=2",
        "probe.epochs=5",
        "probe.optimizer.lr=1e-2",
        *DISTILL,
    )
    probe = json.loads((probe_run / "metrics.json").read_text())
    assert written["distill/teacher_probe_top1"] == pytest.approx(probe["probe/test_top1"])
    assert written["distill/student_probe_top1"] > 0.2
    assert (tmp_path / "student" / "backbone.pt").is_file()


# --- bad input ---------------------------------------------------------------------------
def test_teacher_directory_without_a_probe_head(tmp_path: Path, pretrained_run: Path) -> None:
    with pytest.raises(CheckpointError, match=r"probe_head\.pt is missing.*linear_probe\.py"):
        run_job_in(tmp_path, distill, "distill", f"teacher={pretrained_run}", *DISTILL)


def test_number_of_classes_that_does_not_match_the_teacher(tmp_path: Path, probe_run: Path) -> None:
    with pytest.raises(ConfigError, match=r"probe_head\.pt predicts 10 classes.*num_classes=4"):
        run_job_in(
            tmp_path,
            distill,
            "distill",
            f"teacher={probe_run}",
            "data.source.num_classes=4",
            *DISTILL,
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("distill.alpha=1.5", r"distill.alpha=1.5 must be in \[0, 1\]"),
        ("distill.temperature=0", r"distill.temperature must be a finite number > 0, got 0"),
        ("distill=features", r"Could not find 'distill/features'"),
    ],
)
def test_bad_settings(tmp_path: Path, probe_run: Path, override: str, message: str) -> None:
    from hydra.errors import MissingConfigException

    with pytest.raises((ConfigError, MissingConfigException), match=message):
        run_job_in(tmp_path, distill, "distill", f"teacher={probe_run}", override, *DISTILL)


def test_cli_teacher_without_probe_head_is_one_clear_message(
    tmp_path: Path, pretrained_run: Path
) -> None:
    result = run_script("distill.py", f"teacher={pretrained_run}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{pretrained_run / 'probe_head.pt'} is missing" in result.stderr
