"""The distillation modules: LogitDistillation (the alpha mix of KL and cross-entropy, a
CE-only twin that never runs the teacher, a teacher that does not move, a student pulled to
it) and RepresentationDistillation (SEED's queue, its loss falling). (The job:
tests/jobs/test_distill.py.)"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import nn

from contrastive.losses import cross_entropy, kl_divergence, seed_loss
from contrastive.methods.distillation import LogitDistillation, RepresentationDistillation
from contrastive.optim import warmup_cosine
from contrastive.transforms import ImageInputs
from tests.helpers.training import RECIPE, fit_quietly, tiny_cnn


def optim(lr: float = 2e-3) -> tuple[Any, Any]:
    """The distillation's optimiser (AdamW, weight decay 5e-4) and per-step cosine schedule."""
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=5e-4)
    return optimizer, functools.partial(warmup_cosine, warmup_epochs=0.0)


OPTIM = optim()


class Raises(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the teacher must not run")


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
