"""The LinearProbe module: known-answer tasks on features (softmax, sigmoid, l2),
evaluate_outputs against hand counts, a frozen backbone that does not move. (The job:
tests/jobs/test_linear_probe.py; loading the backbone: tests/test_checkpoints.py.)"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from contrastive.backbones import build_backbone
from contrastive.methods.linear_probe import LinearProbe, evaluate_outputs
from tests.helpers.training import fit_quietly


def probe_of(
    input_dim: int, num_outputs: int, objective: str = "softmax", lr: float = 1e-3, **kw: Any
) -> LinearProbe:
    """A probe with the protocol's optimiser (AdamW, no weight decay) and cosine schedule."""
    optimizer = functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.0)
    scheduler = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR)
    return LinearProbe(input_dim, num_outputs, optimizer, scheduler, objective, **kw)  # type: ignore[arg-type]


def test_softmax_probe_learns_separable_classes() -> None:
    torch.manual_seed(0)
    centres = torch.randn(4, 8) * 3
    labels = torch.randint(0, 4, (512,))
    features = centres[labels] + 0.3 * torch.randn(512, 8)
    model = probe_of(8, 4, "softmax", lr=1e-2)
    fit_quietly(model, features, labels, epochs=10)
    model.eval()
    metrics = evaluate_outputs(model(features).detach(), labels, "softmax")
    assert metrics["probe/test_top1"] > 0.98


def test_sigmoid_probe_learns_a_known_multi_label_rule() -> None:
    torch.manual_seed(0)
    features = torch.randn(1024, 6)
    rule = torch.randn(6, 3)
    targets = (features @ rule > 0).float()  # each label is a half-space: linearly separable
    model = probe_of(6, 3, "sigmoid", lr=1e-2)
    fit_quietly(model, features, targets, epochs=15)
    model.eval()
    metrics = evaluate_outputs(model(features).detach(), targets, "sigmoid")
    assert metrics["probe/test_label_accuracy"] > 0.9  # chance is 0.5


def test_l2_probe_recovers_a_known_linear_map() -> None:
    torch.manual_seed(0)
    features = torch.randn(1024, 5)
    weights, bias = torch.randn(5, 2), torch.tensor([0.5, -1.0])
    targets = features @ weights + bias
    model = probe_of(5, 2, "l2", lr=2e-2)
    fit_quietly(model, features, targets, epochs=30)
    model.eval()
    metrics = evaluate_outputs(model(features).detach(), targets, "l2")
    assert metrics["probe/test_mse"] < 0.01 * targets.var()


def test_evaluate_outputs_against_hand_counts() -> None:
    outputs = torch.tensor([[3.0, 1, 0], [0, 2, 1], [2, 0, 1], [0, 1, 3]])
    labels = torch.tensor([0, 1, 2, 2])
    metrics = evaluate_outputs(outputs, labels, "softmax")
    assert metrics["probe/test_top1"].item() == pytest.approx(0.75)
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(metrics["probe/confusion"], expected)


@pytest.mark.parametrize("finetune", [False, True])
def test_frozen_backbone_is_bit_identical_after_training(finetune: bool) -> None:
    torch.manual_seed(0)
    backbone = build_backbone("small_cnn", in_channels=1, widths=[8, 16], pool_size=2)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = probe_of(64, 3, lr=1e-2, backbone=backbone, finetune=finetune)
    fit_quietly(model, torch.randn(128, 1, 28, 28), torch.randint(0, 3, (128,)), epochs=2)
    after = backbone.state_dict()
    identical = all(torch.equal(before[k], after[k]) for k in before)  # BN buffers too
    assert identical is (not finetune)
