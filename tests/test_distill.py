"""Distillation (logits and SEED), the kNN job, the raw-pixel probe and the demo chain."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from contrastive.backbones import build_backbone
from contrastive.checkpoints import CheckpointError, load_teacher, save_backbone
from contrastive.errors import ConfigError
from contrastive.jobs.demo import ROWS
from contrastive.jobs.distill import distill
from contrastive.jobs.knn import knn_eval
from contrastive.jobs.linear_probe import linear_probe
from contrastive.losses import cross_entropy, kl_divergence, seed_loss
from contrastive.methods.distillation import LogitDistillation, RepresentationDistillation
from contrastive.optim import warmup_cosine
from contrastive.transforms import ImageInputs, ViewRecipe
from tests.helpers.jobs import QUIET, run_job_in, run_script
from tests.helpers.training import fit_quietly

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data=synthetic", "data.source.num_samples=256"]
DISTILL = [
    *DATA,
    "data.batch_size=32",
    "distill.optimizer.lr=1e-2",
    "student.widths=[8,16]",
    *QUIET,
]
RECIPE = ViewRecipe(image_size=28, channels=1, mean=(0.5,), std=(0.5,))


def optim(lr: float = 2e-3) -> tuple[Any, Any]:
    """The distillation's optimiser (AdamW, weight decay 5e-4) and per-step cosine schedule."""
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=5e-4)
    return optimizer, functools.partial(warmup_cosine, warmup_epochs=0.0)


OPTIM = optim()


def tiny_cnn(width: int = 8) -> nn.Module:
    return build_backbone("small_cnn", in_channels=1, widths=[width], pool_size=2)


class Raises(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher must not run")


# --- the modules -----------------------------------------------------------------------------
def test_logit_loss_is_the_alpha_mix_of_kl_and_ce() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(tiny_cnn(), nn.Linear(32, 4))
    model = LogitDistillation(
        tiny_cnn(), teacher, RECIPE, 4, *OPTIM, alpha=0.7, temperature=3, augment=False
    )
    model.log_dict = lambda *args, **kwargs: None  # type: ignore[method-assign]
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 4, (6,))
    model.eval()  # no BatchNorm updates, so both passes see the same networks
    loss = model.training_step((images, labels), 0)
    with torch.no_grad():
        inputs = ImageInputs(RECIPE)(images)
        student = model.head(model.student(inputs))
        expected = 0.7 * kl_divergence(student, teacher.eval()(inputs), 3.0) + 0.3 * cross_entropy(
            student, labels
        )
    torch.testing.assert_close(loss.detach(), expected)


def test_the_ce_only_twin_never_runs_the_teacher_in_training() -> None:
    model = LogitDistillation(tiny_cnn(), Raises(), RECIPE, 3, *OPTIM, alpha=0.0, augment=False)
    fit_quietly(
        model,
        torch.randn(64, 1, 28, 28).clamp(0, 1),
        torch.randint(0, 3, (64,)),
        epochs=1,
        batch_size=32,
    )
    with pytest.raises(AssertionError, match="must not run"):  # and alpha > 0 does run it
        model.alpha = 0.5
        fit_quietly(
            model, torch.rand(32, 1, 28, 28), torch.randint(0, 3, (32,)), epochs=1, batch_size=32
        )


def test_teacher_weights_and_batchnorm_statistics_do_not_move() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(tiny_cnn(), nn.Linear(32, 3))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tiny_cnn()
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    model = LogitDistillation(student, teacher, RECIPE, 3, *OPTIM, alpha=0.9, crop_scale=(0.5, 1.0))
    fit_quietly(
        model, torch.rand(64, 1, 28, 28), torch.randint(0, 3, (64,)), epochs=2, batch_size=32
    )
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_distillation_pulls_the_student_to_the_teacher() -> None:
    """With alpha=1 and no labels to follow, the student's test KL to the teacher falls."""
    torch.manual_seed(0)
    teacher = nn.Sequential(tiny_cnn(), nn.Linear(32, 5))
    images, labels = torch.rand(256, 1, 28, 28), torch.randint(0, 5, (256,))
    model = LogitDistillation(
        tiny_cnn(), teacher, RECIPE, 5, *optim(1e-2), alpha=1.0, augment=False
    )

    def test_kl() -> float:
        model.eval()
        with torch.no_grad():
            inputs = ImageInputs(RECIPE)(images)
            return kl_divergence(model.head(model.student(inputs)), teacher(inputs), 1.0).item()

    start = test_kl()
    fit_quietly(model, images, labels, epochs=8, batch_size=32)
    assert test_kl() < 0.3 * start


def test_seed_queue_is_a_fifo_that_wraps_round() -> None:
    model = RepresentationDistillation(
        tiny_cnn(), tiny_cnn(), RECIPE, 32, *OPTIM, queue_size=5, augment=False
    )
    first, second = torch.randn(3, 32), torch.randn(4, 32)
    model.enqueue(first)
    model.enqueue(second)
    unit = torch.nn.functional.normalize
    torch.testing.assert_close(model.queue[0], unit(second, dim=1)[2])  # wrapped round
    torch.testing.assert_close(model.queue[1], unit(second, dim=1)[3])
    torch.testing.assert_close(model.queue[2], unit(first, dim=1)[2])  # not yet overwritten
    torch.testing.assert_close(model.queue[3:], unit(second, dim=1)[:2])
    assert int(model.queue_ptr) == 2


def test_seed_training_lowers_the_seed_loss() -> None:
    torch.manual_seed(0)
    teacher = tiny_cnn(16)
    model = RepresentationDistillation(
        tiny_cnn(), teacher, RECIPE, 64, *optim(5e-3), queue_size=64, augment=False
    )
    images = torch.rand(128, 1, 28, 28)
    anchors = model.queue.clone()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            inputs = ImageInputs(RECIPE)(images)
            student = model.projection(model.student(inputs))
            return seed_loss(student, teacher(inputs), anchors, 0.07, 0.01).item()

    start = loss()
    fit_quietly(model, images, torch.zeros(128, dtype=torch.long), epochs=10, batch_size=32)
    assert loss() < 0.5 * start


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


def test_teacher_head_and_backbone_from_different_runs(tmp_path: Path, probe_run: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(probe_run, teacher)
    save_backbone(tiny_cnn(4), str(teacher / "backbone.pt"), recipe={})
    with pytest.raises(CheckpointError, match=r"probe_head\.pt takes \d+-d features.*16-d"):
        load_teacher(teacher)


def test_garbage_probe_head(tmp_path: Path, probe_run: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(probe_run, teacher)
    (teacher / "probe_head.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"probe_head\.pt is not a readable checkpoint"):
        load_teacher(teacher)


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


# --- kNN job and raw pixels -----------------------------------------------------------------
def test_knn_job_reproduces_the_pretraining_monitor(tmp_path: Path, pretrained_run: Path) -> None:
    metrics = run_job_in(
        tmp_path, knn_eval, "knn", f"pretrained={pretrained_run}", *DATA, "logger=none"
    )
    monitor = json.loads((pretrained_run / "metrics.json").read_text())
    assert metrics["knn/test_top1"] == pytest.approx(monitor["val/knn_top1"], abs=1e-6)
    assert metrics["knn/test_samples"] == monitor["val/knn_num_test_samples"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)


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


def test_image_inputs_augment_in_training_only() -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    inputs = ImageInputs(RECIPE, crop_scale=(0.3, 0.6))
    eval_view = inputs.eval()(images)
    assert not torch.allclose(inputs.train()(images), eval_view)
    # the full-image crop without a flip is the unaugmented image
    identity = ImageInputs(ViewRecipe(**{**RECIPE.__dict__, "flip_prob": 0.0}), (1.0, 1.0))
    torch.testing.assert_close(identity.train()(images), eval_view, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"crop_scale must be .* got \(0.0, 1.0\)"):
        ImageInputs(RECIPE, (0.0, 1.0))


# --- the chain -------------------------------------------------------------------------------
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
