"""``student=<backbone>`` (conf/student/) builds that backbone, with the teacher's image
channels: before the student became a node of its own, ``student.name=resnet18`` kept
the small CNN's keys and failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastive.backbones import in_channels
from contrastive.cli import compose_job
from contrastive.errors import ConfigError
from contrastive.jobs.distill import build_student


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("small_cnn", {"in_channels", "widths", "convs_per_stage", "pool_size"}),
        ("resnet18", {"in_channels", "small_stem"}),
        ("resnet34", {"in_channels", "small_stem"}),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_student_option_builds_that_backbone_with_the_teachers_channels(
    tmp_path: Path, option: str, kwargs: set[str], channels: int
) -> None:
    cfg = compose_job(tmp_path, "distill", "teacher=x", f"student={option}")
    student = build_student(cfg.student, channels)
    assert student.backbone_spec["name"] == option  # type: ignore[index]
    assert set(student.backbone_spec["kwargs"]) == kwargs  # type: ignore[index]
    assert in_channels(student) == channels


def test_a_student_that_cannot_take_the_teachers_images(tmp_path: Path) -> None:
    cfg = compose_job(tmp_path, "distill", "teacher=x", "student=resnet18", "student.in_channels=3")
    with pytest.raises(
        ConfigError, match=r"student\.in_channels=3 but the teacher's images have 1"
    ):
        build_student(cfg.student, 1)
