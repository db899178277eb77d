"""Tests of the SimCLR view recipe: validation, normalisation of inputs, presets vs. YAML."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from contrastive.transforms import ViewRecipe, preset, preset_names

REPO_ROOT = Path(__file__).resolve().parents[2]
AUGMENT_DIR = REPO_ROOT / "conf" / "augment"
FIELDS = [f.name for f in dataclasses.fields(ViewRecipe)]


def make(**overrides: Any) -> ViewRecipe:
    return ViewRecipe(**{"image_size": 32, "channels": 3, **overrides})


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 0),
        ("channels", 2),
        ("channels", 4),
        ("channels", 0),
        ("backend", "gpu"),
        ("num_views", 1),
        ("num_views", 0),
        ("crop_scale", (0.9, 0.2)),
        ("crop_scale", (0.0, 0.5)),
        ("crop_scale", (0.5, 1.5)),
        ("crop_ratio", (2.0, 1.0)),
        ("crop_ratio", (0.0, 1.0)),
        ("flip_prob", 1.5),
        ("flip_prob", -0.1),
        ("jitter_prob", 1.01),
        ("grayscale_prob", -0.5),
        ("blur_prob", 2.0),
        ("solarize_prob", 1.2),
        ("brightness", 1.0),
        ("contrast", -0.1),
        ("saturation", 1.5),
        ("hue", 0.6),
        ("blur_sigma", (0.0, 1.0)),
        ("blur_sigma", (2.0, 1.0)),
        ("mean", (0.1, 0.2)),
        ("std", (0.5, 0.5)),
        ("std", (0.5, 0.0, 0.5)),
        ("blur_kernel_size", 4),
        ("blur_kernel_size", -3),
    ],
)
def test_invalid_field_raises_naming_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        make(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field} must be "), message
    assert message.endswith(f"got {value!r}"), message


def test_list_input_error_reports_the_value_as_a_tuple() -> None:
    with pytest.raises(ValueError, match=r"crop_scale .* got \(0\.9, 0\.2\)$"):
        make(crop_scale=[0.9, 0.2])


def test_boundary_values_are_accepted() -> None:
    recipe = make(
        channels=1,
        num_views=2,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_prob=0.0,
        jitter_prob=1.0,
        grayscale_prob=0.0,
        blur_prob=1.0,
        solarize_prob=0.0,
        brightness=0.0,
        hue=0.5,
        blur_sigma=(1.0, 1.0),
        blur_kernel_size=1,
        backend="per_sample",
    )
    assert recipe.channels == 1
    assert recipe.blur_kernel_size == 1
    assert recipe.backend == "per_sample"


# --------------------------------------------------------------------------------------------
# Input normalisation and derived values
# --------------------------------------------------------------------------------------------


def test_list_inputs_become_float_tuples_and_recipe_is_hashable() -> None:
    recipe = make(
        mean=[0, 0.5, 1],
        std=[1, 2, 3],
        crop_scale=[0.2, 1],
        crop_ratio=[1, 2],
        blur_sigma=[1, 2],
    )
    expected = {
        "mean": (0.0, 0.5, 1.0),
        "std": (1.0, 2.0, 3.0),
        "crop_scale": (0.2, 1.0),
        "crop_ratio": (1.0, 2.0),
        "blur_sigma": (1.0, 2.0),
    }
    for name, value in expected.items():
        got = getattr(recipe, name)
        assert type(got) is tuple, name
        assert got == value, name
        assert all(type(v) is float for v in got), name
    # Frozen + tuples: usable as a dict key, and equal recipes hash equally.
    twin = make(
        mean=(0, 0.5, 1), std=(1, 2, 3), crop_scale=(0.2, 1), crop_ratio=(1, 2), blur_sigma=(1, 2)
    )
    assert hash(recipe) == hash(twin)
    assert {recipe: 1}[twin] == 1


@pytest.mark.parametrize(
    ("image_size", "kernel"),
    [(10, 1), (20, 3), (28, 3), (32, 3), (40, 5), (96, 9), (100, 11), (224, 23)],
)
def test_default_blur_kernel_is_ten_percent_of_the_side_made_odd(
    image_size: int, kernel: int
) -> None:
    assert make(image_size=image_size).blur_kernel_size == kernel


def test_explicit_blur_kernel_is_kept() -> None:
    assert make(image_size=224, blur_kernel_size=7).blur_kernel_size == 7


def test_channel_stats_expand_single_values_to_every_channel() -> None:
    assert make(mean=(0.25,), std=(0.5,)).channel_stats() == ((0.25,) * 3, (0.5,) * 3)
    three = make(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert three.channel_stats() == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    gray = make(channels=1, mean=(0.3,), std=(0.7,))
    assert gray.channel_stats() == ((0.3,), (0.7,))


def test_log_ratio_is_the_log_of_crop_ratio() -> None:
    low, high = make(crop_ratio=(0.5, 4.0)).log_ratio
    assert math.isclose(low, -math.log(2.0))
    assert math.isclose(high, 2 * math.log(2.0))


# --------------------------------------------------------------------------------------------
# Presets and their YAML twins
# --------------------------------------------------------------------------------------------


def _same(a: object, b: object) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        # YAML writes 4/3 as 1.333333.
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)  # type: ignore[arg-type]
    return a == b


def test_the_presets_are_the_augment_group() -> None:
    assert preset_names() == sorted(p.stem for p in AUGMENT_DIR.glob("*.yaml"))
    assert preset_names() == ["cifar", "fashion_mnist", "imagenet", "stl10"]


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_what_hydra_composes(tmp_path: Path, name: str) -> None:
    """One definition, two readers: ``preset()`` (plain YAML) and ``augment=<name>``
    (Hydra, through the typed schema) build the same recipe, exactly."""
    from hydra.utils import instantiate

    from contrastive.cli import compose_job

    composed = instantiate(compose_job(tmp_path, "pretrain", f"augment={name}").augment)
    assert preset(name) == composed
    assert preset(name, hue=0.3) != composed  # the comparison can fail


@pytest.mark.parametrize("name", preset_names())
def test_preset_yaml_holds_only_what_differs_from_the_defaults(name: str) -> None:
    config = OmegaConf.to_container(OmegaConf.load(AUGMENT_DIR / f"{name}.yaml"), resolve=True)
    assert isinstance(config, dict)
    assert config.pop("_target_") == "contrastive.transforms.ViewRecipe"
    assert config.pop("defaults") == ["/schema/augment@_here_", "_self_"]
    defaults = ViewRecipe(image_size=config["image_size"], channels=config["channels"])
    fixed = ("image_size", "channels")
    repeated = [
        k for k, v in config.items() if k not in fixed and getattr(defaults, k) == _tuple(v)
    ]
    assert not repeated, f"{name}.yaml repeats ViewRecipe's defaults: {repeated}"


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def test_same_helper_detects_a_difference() -> None:
    # Guard against a vacuous comparison in the preset test above.
    assert not _same((0.75, 1.333333), (0.75, 1.34))
    assert not _same(0.2, 0.2001)
    assert not _same("batched", "per_sample")
    assert _same((0.75, 1.333333), (3 / 4, 4 / 3))


def test_preset_overrides_and_unknown_name() -> None:
    recipe = preset("cifar", image_size=24, blur_prob=0.5)
    assert recipe.image_size == 24
    assert recipe.blur_prob == 0.5
    assert recipe.mean == (0.4914, 0.4822, 0.4465)
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'mnist'.*cifar"):
        preset("mnist")
