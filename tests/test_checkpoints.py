"""Tests of contrastive.checkpoints: backbone.pt written and read back, no usable checkpoint
to resume from, a pickle that would run code refused unless trusted, run and teacher
directories loaded or refused with the file named."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.backbones import SmallCNN, build_backbone
from contrastive.checkpoints import CheckpointError, load_pretrained, load_teacher, save_backbone
from tests.helpers.jobs import run_script
from tests.helpers.resume import JOB
from tests.helpers.training import tiny_cnn


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# save_backbone / load_pretrained
# --------------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_backbone("small_cnn", in_channels=1, widths=[4, 8], pool_size=2)
    net(torch.rand(8, 1, 16, 16, generator=_gen(1)))  # train mode: move BN running stats
    net.eval()
    path = tmp_path / "backbone.pt"
    save_backbone(net, str(path), epoch=3)

    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "contrastive.backbone/1"
    assert payload["spec"] == net.backbone_spec
    assert payload["feature_dim"] == 32
    assert payload["epoch"] == 3
    assert set(payload["state_dict"]) == set(net.state_dict())

    pretrained = load_pretrained(path)
    loaded = pretrained.backbone
    assert isinstance(loaded, SmallCNN)
    assert "state_dict" not in pretrained.extra and pretrained.extra["epoch"] == 3
    assert loaded.backbone_spec == net.backbone_spec
    loaded.eval()
    x = torch.rand(3, 1, 16, 16, generator=_gen(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    # The BN running statistics travelled too (a fresh model would differ).
    fresh = build_backbone("small_cnn", in_channels=1, widths=[4, 8], pool_size=2).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), net(x))


def test_save_refuses_a_module_without_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backbone_spec"):
        save_backbone(SmallCNN(widths=(4,)), str(tmp_path / "x.pt"))


@pytest.mark.parametrize("content", [{"x": 1}, {"format": "other"}, torch.zeros(3)])
def test_load_refuses_a_file_that_is_not_a_backbone(tmp_path: Path, content: object) -> None:
    path = tmp_path / "not_a_backbone.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_pretrained(path)


def test_format_1_written_by_hand_still_loads(tmp_path: Path) -> None:
    """backbone.pt's layout is frozen: a file of format 1 (what every release has written)
    loads, whichever module writes it now."""
    net = build_backbone("small_cnn", in_channels=1, widths=[4], pool_size=1).eval()
    path = tmp_path / "backbone.pt"
    payload = {
        "format": "contrastive.backbone/1",
        "spec": {"name": "small_cnn", "kwargs": {"in_channels": 1, "widths": [4], "pool_size": 1}},
        "feature_dim": 4,
        "state_dict": net.state_dict(),
        "epoch": 7,
    }
    torch.save(payload, path)
    pretrained = load_pretrained(path)
    loaded = pretrained.backbone
    assert pretrained.extra["epoch"] == 7 and pretrained.spec == net.backbone_spec
    x = torch.rand(2, 1, 8, 8, generator=_gen(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_resume_with_only_garbage_checkpoints_is_an_error_not_a_fresh_start(
    tmp_path: Path, compose_cfg: Any
) -> None:
    from contrastive.checkpoints import resume_checkpoint
    from contrastive.errors import ConfigError

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage" * 100)
    cfg = compose_cfg(*JOB)
    with pytest.raises(ConfigError, match=r"no usable checkpoint.*last\.ckpt.*resume=null"):
        resume_checkpoint(cfg.resume, Path(cfg.output_dir))


def booby_trapped_backbone(pretrained_run: Path, directory: Path) -> tuple[Path, Path]:
    """A real ``backbone.pt`` that also holds an object whose unpickling creates a marker
    file; returns ``(the file, the marker)``."""
    from tests.helpers.faults import TouchOnLoad

    marker = directory / "pwned"
    payload = torch.load(pretrained_run / "backbone.pt", weights_only=True)
    payload["note"] = TouchOnLoad(str(marker))
    evil = directory / "backbone.pt"
    torch.save(payload, evil)
    return evil, marker


def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(
    tmp_path: Path, pretrained_run: Path
) -> None:
    from contrastive.checkpoints import CheckpointError, load_pretrained

    evil, marker = booby_trapped_backbone(pretrained_run, tmp_path)
    with pytest.raises(CheckpointError, match=r"needs arbitrary code.*trust_checkpoint=true"):
        load_pretrained(evil)
    assert not marker.exists()  # refused before anything ran
    backbone = load_pretrained(evil, trust=True).backbone  # the user vouched for it
    assert marker.exists() and sum(p.numel() for p in backbone.parameters()) > 0


def test_cli_refuses_an_untrusted_pickle_with_a_message(
    tmp_path: Path, pretrained_run: Path
) -> None:
    evil, marker = booby_trapped_backbone(pretrained_run, tmp_path)
    result = run_script("knn_eval.py", f"pretrained={evil}", "data=synthetic")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs arbitrary code" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


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
