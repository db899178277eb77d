"""Tests of the named backbones and their save/load format."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from contrastive.backbones import (
    SmallCNN,
    build_backbone,
    feature_dim,
    in_channels,
    resnet,
    save_backbone,
)
from contrastive.checkpoints import load_pretrained

BACKBONE_NAMES = ["resnet18", "resnet34", "resnet50", "small_cnn"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny ResNet forwards are ~50x slower with 2 contending OpenMP threads on a busy box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# SmallCNN
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "widths", "convs", "pool", "side"),
    [(1, (8,), 1, 1, 28), (1, (4, 8), 1, 2, 28), (3, (4, 8, 16), 2, 2, 32), (3, (6, 5), 1, 3, 17)],
)
def test_small_cnn_output_shape(
    channels: int, widths: tuple[int, ...], convs: int, pool: int, side: int
) -> None:
    net = SmallCNN(in_channels=channels, widths=widths, convs_per_stage=convs, pool_size=pool)
    out = net(torch.rand(2, channels, side, side, generator=_gen()))
    assert out.shape == (2, widths[-1] * pool**2)
    assert net.feature_dim == widths[-1] * pool**2
    convs_found = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs_found) == len(widths) * convs
    assert [c.out_channels for c in convs_found][::convs] == list(widths)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == len(widths) - 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"widths": ()}, "widths"),
        ({"widths": (8, 0)}, "widths"),
        ({"pool_size": 0}, "pool_size"),
    ],
)
def test_small_cnn_rejects_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmallCNN(**kwargs)


# --------------------------------------------------------------------------------------------
# ResNets
# --------------------------------------------------------------------------------------------


def test_small_stem_keeps_the_spatial_size_and_takes_one_channel() -> None:
    net = resnet("resnet18", in_channels=1, small_stem=True).eval()
    assert net.conv1.stride == (1, 1)
    assert net.conv1.kernel_size == (3, 3)
    assert net.conv1.in_channels == 1
    assert isinstance(net.maxpool, nn.Identity)
    x = torch.rand(2, 1, 32, 32, generator=_gen())
    stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    assert stem.shape == (2, 64, 32, 32)
    assert net(x).shape == (2, 512)
    assert net.feature_dim == 512 and net.in_channels == 1


def test_standard_stem_downsamples_by_four() -> None:
    net = resnet("resnet18", in_channels=1).eval()
    assert net.conv1.stride == (2, 2) and net.conv1.kernel_size == (7, 7)
    assert net.conv1.in_channels == 1
    x = torch.rand(1, 1, 32, 32, generator=_gen())
    assert net.maxpool(net.relu(net.bn1(net.conv1(x)))).shape == (1, 64, 8, 8)


def test_standard_resnet_loads_into_torchvision_and_computes_the_same() -> None:
    torch.manual_seed(0)
    ours = resnet("resnet18").eval()
    reference = torchvision.models.resnet18()
    result = reference.load_state_dict(ours.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    reference.fc = nn.Identity()
    reference.eval()
    x = torch.rand(2, 3, 32, 32, generator=_gen())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-6)


def test_unknown_resnet_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"resnet9.*resnet18.*resnet34.*resnet50"):
        resnet("resnet9")


# --------------------------------------------------------------------------------------------
# build_backbone
# --------------------------------------------------------------------------------------------


def test_build_backbone_records_its_spec() -> None:
    net = build_backbone("small_cnn", in_channels=3, widths=(4, 8), pool_size=2)
    assert isinstance(net, SmallCNN)
    assert net.backbone_spec == {
        "name": "small_cnn",
        "kwargs": {"in_channels": 3, "widths": [4, 8], "pool_size": 2},
    }
    assert feature_dim(net) == 32 and in_channels(net) == 3

    res = build_backbone("resnet18", in_channels=1, small_stem=True)
    assert res.backbone_spec == {
        "name": "resnet18",
        "kwargs": {"in_channels": 1, "small_stem": True},
    }
    assert isinstance(res.maxpool, nn.Identity) and res.conv1.in_channels == 1
    assert feature_dim(res) == 512 and in_channels(res) == 1


def test_unknown_backbone_error_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        build_backbone("vgg16")
    message = str(info.value)
    assert "'vgg16'" in message
    for name in BACKBONE_NAMES:
        assert name in message


def test_feature_dim_and_in_channels_need_the_attributes() -> None:
    with pytest.raises(TypeError, match="feature_dim"):
        feature_dim(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="in_channels"):
        in_channels(nn.Linear(2, 2))


# --------------------------------------------------------------------------------------------
# save_backbone / checkpoints.load_pretrained
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
