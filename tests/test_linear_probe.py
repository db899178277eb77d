"""The linear-probe job and its module: known-answer tasks, frozen weights, bad input."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive.backbones import build_backbone
from contrastive.checkpoints import CheckpointError, load_pretrained, save_backbone
from contrastive.errors import ConfigError
from contrastive.jobs.linear_probe import linear_probe
from contrastive.methods.linear_probe import LinearProbe, evaluate_outputs
from tests.helpers.jobs import QUIET, run_script
from tests.helpers.markers import needs_fashion_mnist
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


def test_last_ckpt_and_backbone_pt_hold_the_same_backbone(pretrained_run: Path) -> None:
    pt = load_pretrained(pretrained_run)
    ckpt = load_pretrained(pretrained_run / "checkpoints" / "last.ckpt")
    assert pt.spec == ckpt.spec and pt.recipe == ckpt.recipe
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(pt.backbone(images), ckpt.backbone(images))


def test_checkpoint_from_another_backbone(tmp_path: Path) -> None:
    small = build_backbone("small_cnn", in_channels=1, widths=[8])
    save_backbone(small, str(tmp_path / "backbone.pt"), recipe={})
    payload = torch.load(tmp_path / "backbone.pt", weights_only=True)
    payload["spec"] = {"name": "small_cnn", "kwargs": {"in_channels": 1, "widths": [16]}}
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt.*another backbone"):
        load_pretrained(tmp_path / "other.pt")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_garbage_checkpoint(tmp_path: Path, damage: str) -> None:
    save_backbone(build_backbone("small_cnn", widths=[8]), str(tmp_path / "ok.pt"), recipe={})
    data = (tmp_path / "ok.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt is not a readable checkpoint"):
        load_pretrained(bad)


def test_missing_run_directory_contents(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"neither backbone\.pt nor checkpoints/last\.ckpt"):
        load_pretrained(tmp_path)


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
