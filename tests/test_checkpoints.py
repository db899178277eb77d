"""Tests of backbone.pt: contrastive.checkpoints writes it and reads it back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from contrastive.backbones import SmallCNN, build_backbone
from contrastive.checkpoints import load_pretrained, save_backbone


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
