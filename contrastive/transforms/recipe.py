"""The SimCLR view recipe: one description shared by the batched and per-sample paths."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Backend = Literal["batched", "per_sample"]
BACKENDS: tuple[str, ...] = ("batched", "per_sample")
JitterOrder = Literal["random", "fixed"]
JITTER_ORDERS: tuple[str, ...] = ("random", "fixed")


@dataclass(frozen=True)
class ViewRecipe:
    """Hyperparameters of the SimCLR augmentation (Chen et al., 2020, appendix A).

    A view is made by: random resized crop (area fraction in ``crop_scale``, aspect ratio
    in ``crop_ratio``) -> horizontal flip -> colour jitter with probability
    ``jitter_prob`` -> random grayscale -> Gaussian blur with probability ``blur_prob`` ->
    solarisation with probability ``solarize_prob`` -> normalisation with ``mean``/``std``.
    Every random parameter is drawn independently per sample and per view.

    Multi-crop (Caron et al. 2020, SwAV): ``local_views`` more views per image, cut with
    area fractions in ``local_crop_scale`` and resized to ``local_size`` pixels (0: half of
    ``image_size``), with the rest of the recipe as for the ``num_views`` global views (the
    blur kernel scaled to the local size). Made by the batched backend only.

    The jitter applies brightness, contrast, saturation and hue in an order drawn per
    sample (``jitter_order="random"``, as torchvision's ``ColorJitter`` and the SimCLR
    recipe do) or always in that order (``"fixed"``). Saturation, hue and grayscale are
    skipped for single-channel images.

    Examples:
        >>> recipe = ViewRecipe(image_size=32, channels=3)
        >>> recipe.blur_kernel_size
        3
        >>> ViewRecipe(image_size=32, channels=3, crop_scale=(0.9, 0.2))
        Traceback (most recent call last):
        ...
        ValueError: crop_scale must be (min, max) with 0 < min <= max <= 1, got (0.9, 0.2)
    """

    image_size: int
    channels: int
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    num_views: int = 2
    backend: Backend = "batched"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_order: JitterOrder = "random"
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int = field(default=0)
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5
    local_views: int = 0
    local_size: int = 0
    local_crop_scale: tuple[float, float] = (0.05, 0.14)

    def __post_init__(self) -> None:
        def fail(name: str, value: object, accepted: str) -> None:
            raise ValueError(f"{name} must be {accepted}, got {value!r}")

        if self.image_size < 1:
            fail("image_size", self.image_size, "a positive number of pixels")
        if self.channels not in (1, 3):
            fail("channels", self.channels, "1 (grayscale) or 3 (RGB)")
        if self.backend not in BACKENDS:
            fail("backend", self.backend, f"one of {list(BACKENDS)}")
        if self.jitter_order not in JITTER_ORDERS:
            fail("jitter_order", self.jitter_order, f"one of {list(JITTER_ORDERS)}")
        if self.num_views < 2:
            fail("num_views", self.num_views, ">= 2")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            fail("crop_scale", tuple(self.crop_scale), "(min, max) with 0 < min <= max <= 1")
        if self.local_views < 0:
            fail("local_views", self.local_views, "a number of local views >= 0")
        if self.local_size == 0:
            object.__setattr__(self, "local_size", max(1, self.image_size // 2))
        if not 0 < self.local_size <= self.image_size:
            fail(
                "local_size",
                self.local_size,
                f"a positive size at most image_size={self.image_size} (local views are the "
                "small ones)",
            )
        if self.local_views and self.backend != "batched":
            fail("backend", self.backend, "'batched' for local views (augment.local_views > 0)")
        low, high = self.local_crop_scale
        if not 0 < low <= high <= 1:
            fail(
                "local_crop_scale",
                tuple(self.local_crop_scale),
                "(min, max) with 0 < min <= max <= 1",
            )
        low, high = self.crop_ratio
        if not 0 < low <= high:
            fail("crop_ratio", tuple(self.crop_ratio), "(min, max) with 0 < min <= max")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                fail(name, value, "a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                fail(name, value, "a jitter strength in [0, 1)")
        if not 0 <= self.hue <= 0.5:
            fail("hue", self.hue, "in [0, 0.5]")
        low, high = self.blur_sigma
        if not 0 < low <= high:
            fail("blur_sigma", tuple(self.blur_sigma), "(min, max) with 0 < min <= max")
        for stats in ("mean", "std"):
            if len(getattr(self, stats)) not in (1, self.channels):
                fail(stats, getattr(self, stats), f"1 or {self.channels} values")
        if any(s <= 0 for s in self.std):
            fail("std", self.std, "positive values")
        # Hydra hands lists; freeze them into tuples so the recipe is hashable.
        for name in ("mean", "std", "crop_scale", "crop_ratio", "blur_sigma", "local_crop_scale"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.blur_kernel_size == 0:
            # SimCLR uses 10% of the image side, made odd.
            object.__setattr__(self, "blur_kernel_size", 2 * int(self.image_size * 0.05) + 1)
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            fail("blur_kernel_size", self.blur_kernel_size, "an odd positive integer")

    @property
    def local_blur_kernel_size(self) -> int:
        """The blur kernel of the local views: the global one scaled to their size, odd."""
        scaled = round(self.blur_kernel_size * self.local_size / self.image_size)
        return scaled if scaled % 2 else max(1, scaled - 1)

    @property
    def log_ratio(self) -> tuple[float, float]:
        return math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``mean`` and ``std`` expanded to one value per channel."""
        mean = self.mean * self.channels if len(self.mean) == 1 else self.mean
        std = self.std * self.channels if len(self.std) == 1 else self.std
        return mean, std
