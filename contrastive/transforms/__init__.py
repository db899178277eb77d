"""SimCLR views: the recipe, its presets, and two interchangeable ways to run it."""

from __future__ import annotations

from typing import Any

import yaml

from contrastive.conf import conf_dir
from contrastive.transforms.batched import (
    BatchedViews,
    ImageInputs,
    augmented_images,
    eval_images,
    normalize,
    to_float,
)
from contrastive.transforms.per_sample import PerSampleViews, build_view_transform
from contrastive.transforms.recipe import BACKENDS, ViewRecipe


def preset_names() -> list[str]:
    """The recipe presets: the options of the ``augment`` config group."""
    return sorted(path.stem for path in (conf_dir() / "augment").glob("*.yaml"))


def preset(name: str, **overrides: Any) -> ViewRecipe:
    """The recipe of ``conf/augment/<name>.yaml`` (the one definition of each preset, which
    Hydra's ``augment=<name>`` composes too), with any field overridden.

    Examples:
        >>> preset("cifar").image_size
        32
        >>> preset("mnist")
        Traceback (most recent call last):
        ...
        ValueError: unknown augmentation preset 'mnist'; choose one of ['cifar', 'fashion_mnist', 'imagenet', 'stl10']
    """
    if name not in preset_names():
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of {preset_names()}")
    fields = yaml.safe_load((conf_dir() / "augment" / f"{name}.yaml").read_text())
    fields = {k: v for k, v in fields.items() if k not in ("defaults", "_target_")}
    return ViewRecipe(**{**fields, **overrides})


__all__ = [
    "BACKENDS",
    "BatchedViews",
    "ImageInputs",
    "PerSampleViews",
    "ViewRecipe",
    "augmented_images",
    "build_view_transform",
    "eval_images",
    "normalize",
    "preset",
    "preset_names",
    "to_float",
]
