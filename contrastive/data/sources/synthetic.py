"""A small deterministic dataset whose classes can be learnt, for tests and benchmarks."""

from __future__ import annotations

import zlib
from typing import ClassVar

import torch
import torch.nn.functional as nnf

from contrastive.data.sources.base import ImageArrays, Source, Splits

__all__ = ["Synthetic", "make_synthetic"]


def _split_seed(seed: int, split: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**63)


def make_synthetic(
    num_samples: int,
    num_classes: int,
    image_size: int,
    channels: int,
    seed: int = 0,
    *,
    split: str = "train",
) -> ImageArrays:
    """A small deterministic dataset whose classes can actually be learnt, for tests.

    Each class is a fixed random smooth template (uniform noise on a coarse grid, upsampled
    bicubically); each sample is its class's template shifted by a few pixels, with random
    contrast, brightness and Gaussian pixel noise. The templates depend only on ``seed`` (and
    the shape arguments), the samples also on ``split``, so the splits of one seed share
    their classes but not their samples. Classes are balanced and shuffled.

    Args:
        num_samples: Number of images.
        num_classes: Number of classes.
        image_size: Side of the square images, in pixels.
        channels: Number of channels.
        seed: Seed of the templates and samples.
        split: Name of the split, e.g. ``"train"`` or ``"test"``.

    Returns:
        Images of shape ``(num_samples, channels, image_size, image_size)``.

    Examples:
        >>> data = make_synthetic(num_samples=20, num_classes=4, image_size=16, channels=3)
        >>> tuple(data.images.shape), data.images.dtype, data.labels.bincount().tolist()
        ((20, 3, 16, 16), torch.uint8, [5, 5, 5, 5])
        >>> torch.equal(data.images, make_synthetic(20, 4, 16, 3).images)
        True
    """
    for name, value in (
        ("num_samples", num_samples),
        ("num_classes", num_classes),
        ("image_size", image_size),
        ("channels", channels),
    ):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    grid = max(2, image_size // 8)
    shift = image_size // 16
    padded = image_size + 2 * shift
    templates_gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((num_classes, channels, grid, grid), generator=templates_gen)
    templates = nnf.interpolate(coarse, size=(padded, padded), mode="bicubic").clamp(0, 1)

    gen = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=gen)]
    offsets = torch.randint(0, 2 * shift + 1, (num_samples, 2, 1), generator=gen)
    rows, cols = (offsets + torch.arange(image_size)).unbind(1)  # each (num_samples, size)
    # Advanced indices around a slice put the channel last: (N, H, W, C).
    images = templates[labels[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    images = images.permute(0, 3, 1, 2)
    contrast = 0.6 + 0.4 * torch.rand((num_samples, 1, 1, 1), generator=gen)
    brightness = 0.2 * torch.rand((num_samples, 1, 1, 1), generator=gen)
    noise = torch.randn(images.shape, generator=gen).mul_(0.08)
    images = noise.add_(images * contrast).add_(brightness)
    pixels = images.mul_(255).round_().clamp_(0, 255).to(torch.uint8).contiguous()
    classes = tuple(f"class_{index}" for index in range(num_classes))
    return ImageArrays(pixels, labels.to(torch.int64), classes)


class Synthetic(Source):
    """:func:`make_synthetic` data: ``num_samples`` training images, a quarter as many in
    ``val`` and in ``test``, all from the same class templates (seed 0); pretrains and
    builds the kNN bank on ``train``, tests on ``test``.

    Args:
        num_samples: Images in the training split.
        num_classes: Number of classes.
        image_size: Side of the square images, in pixels.
        channels: Number of channels.
    """

    name: ClassVar[str] = "synthetic"
    splits: ClassVar[Splits] = Splits("train", "train", "test", valid=("train", "val", "test"))
    num_classes: int

    def __init__(
        self,
        num_samples: int = 2048,
        num_classes: int = 10,
        image_size: int = 28,
        channels: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.image_size = image_size
        self.channels = channels

    def _load(self, split: str) -> ImageArrays:
        return make_synthetic(
            self.num_samples if split == "train" else self.num_samples // 4,
            self.num_classes,
            self.image_size,
            self.channels,
            seed=0,  # the same class templates for every split
            split=split,
        )
