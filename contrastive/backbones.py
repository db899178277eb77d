"""Named backbones: ``build_backbone(name, ...)`` returns a module with ``feature_dim``.

Every backbone maps ``(B, C, H, W)`` images to ``(B, feature_dim)`` features and can be
rebuilt from ``(name, kwargs)`` alone, which is what ``backbone.pt`` stores (written and
read by :mod:`contrastive.checkpoints`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torchvision
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """A small VGG-style CNN that trains fast on CPU.

    ``len(widths)`` stages, each ``[conv3x3 -> BN -> ReLU] x convs_per_stage`` followed by a
    2x2 max-pool (none after the last stage). The last feature map is average-pooled to a
    ``pool_size x pool_size`` grid and flattened, so ``feature_dim = widths[-1] *
    pool_size**2``. Keeping a coarse spatial grid (rather than global pooling) keeps where
    in the image a pattern occurs, which matters for small, centred images such as
    Fashion-MNIST garments.

    Examples:
        >>> import torch
        >>> net = SmallCNN(in_channels=1, widths=(8, 16), pool_size=2)
        >>> net.feature_dim, tuple(net(torch.zeros(2, 1, 28, 28)).shape)
        (64, (2, 64))
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 1,
        pool_size: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of positive ints, got {widths}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        channels = in_channels
        for stage, width in enumerate(widths):
            for _ in range(convs_per_stage):
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                channels = width
            if stage < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(pool_size), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.feature_dim = widths[-1] * pool_size**2

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images)  # (B, feature_dim)


class Pixels(nn.Module):
    """No network: the flattened pixels are the features, ``feature_dim = in_channels *
    image_size**2``. The linear probe on it is the raw-pixel baseline
    (``scripts/linear_probe.py pretrained=pixels``).

    Examples:
        >>> import torch
        >>> Pixels(in_channels=1, image_size=4)(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 16])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.feature_dim = in_channels * image_size**2

    def forward(self, images: Tensor) -> Tensor:
        return images.flatten(1)


_RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def resnet(arch: str = "resnet18", in_channels: int = 3, small_stem: bool = False) -> nn.Module:
    """A randomly initialised torchvision ResNet with its classifier removed.

    ``small_stem=True`` replaces the 7x7 stride-2 stem and max-pool by a 3x3 stride-1 conv
    (the usual CIFAR variant). With the standard stem and 3 input channels, the state dict
    loads into ``torchvision.models.<arch>()`` (all keys but ``fc.*``).

    Examples:
        >>> import torch
        >>> net = resnet("resnet18", in_channels=1, small_stem=True)
        >>> net.feature_dim, tuple(net(torch.zeros(2, 1, 32, 32)).shape)
        (512, (2, 512))
    """
    if arch not in _RESNETS:
        raise ValueError(f"unknown ResNet {arch!r}; choose one of {sorted(_RESNETS)}")
    model = _RESNETS[arch](weights=None)
    if small_stem or in_channels != 3:
        stride, kernel = (1, 3) if small_stem else (2, 7)
        model.conv1 = nn.Conv2d(
            in_channels, 64, kernel, stride=stride, padding=kernel // 2, bias=False
        )
    if small_stem:
        model.maxpool = nn.Identity()
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    model.in_channels = in_channels
    return model


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "pixels": Pixels,
    **{arch: (lambda arch=arch, **kw: resnet(arch, **kw)) for arch in _RESNETS},
}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a backbone by name; the result has ``feature_dim`` and ``in_channels``.

    The call is recorded on the module as ``backbone_spec = {"name": ..., "kwargs": ...}``
    so it can be rebuilt from a checkpoint without repeating the config.

    Examples:
        >>> net = build_backbone("small_cnn", in_channels=1, widths=[8])
        >>> net.backbone_spec
        {'name': 'small_cnn', 'kwargs': {'in_channels': 1, 'widths': [8]}}
        >>> build_backbone("vgg")
        Traceback (most recent call last):
        ...
        ValueError: unknown backbone 'vgg'; choose one of ['pixels', 'resnet18', 'resnet34', 'resnet50', 'small_cnn']
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    kwargs = {k: list(v) if isinstance(v, tuple | list) else v for k, v in kwargs.items()}
    model = BACKBONES[name](**kwargs)
    model.backbone_spec = {"name": name, "kwargs": kwargs}  # type: ignore[assignment]
    return model


def feature_dim(backbone: nn.Module) -> int:
    """The width of ``backbone``'s output features."""
    dim = getattr(backbone, "feature_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{type(backbone).__name__} has no integer attribute 'feature_dim'")
    return dim


def in_channels(backbone: nn.Module) -> int:
    """The number of image channels ``backbone`` accepts."""
    channels = getattr(backbone, "in_channels", None)
    if not isinstance(channels, int):
        raise TypeError(f"{type(backbone).__name__} has no integer attribute 'in_channels'")
    return channels
