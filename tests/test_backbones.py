"""Tests of the named backbones (their save/load format: ``tests/test_checkpoints.py``)."""

from __future__ import annotations

from collections.abc import Iterator

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
)

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
