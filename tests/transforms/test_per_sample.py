"""Tests of the per-sample (torchvision v2, DataLoader-worker) view path."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from contrastive.transforms import BatchedViews, PerSampleViews, ViewRecipe, build_view_transform

DETERMINISTIC: dict[str, Any] = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


def textured(channels: int, size: int = 24, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, size, size), dtype=torch.uint8, generator=generator)


def _ops(transform: v2.Compose) -> list[v2.Transform]:
    """The transforms of a Compose, with RandomApply wrappers opened."""
    ops: list[v2.Transform] = []
    for op in transform.transforms:
        ops.extend(op.transforms if isinstance(op, v2.RandomApply) else [op])
    return ops


def test_output_shape_and_dtype() -> None:
    make_views = PerSampleViews(ViewRecipe(image_size=16, channels=3, num_views=3))
    views = make_views(textured(3))
    assert views.shape == (3, 3, 16, 16)
    assert views.dtype == torch.float32


def test_two_views_differ() -> None:
    torch.manual_seed(0)
    make_views = PerSampleViews(ViewRecipe(image_size=16, channels=3))
    image = textured(3)
    for _ in range(5):
        views = make_views(image)
        assert (views[0] - views[1]).abs().max() > 1e-3


def test_grayscale_ops_are_skipped_for_one_channel() -> None:
    common = dict(image_size=16, saturation=0.4, hue=0.1, grayscale_prob=0.2, jitter_prob=0.8)
    gray_ops = _ops(build_view_transform(ViewRecipe(channels=1, **common)))
    rgb_ops = _ops(build_view_transform(ViewRecipe(channels=3, **common)))

    assert not any(isinstance(op, v2.RandomGrayscale) for op in gray_ops)
    (gray_jitter,) = [op for op in gray_ops if isinstance(op, v2.ColorJitter)]
    assert gray_jitter.saturation is None and gray_jitter.hue is None
    assert gray_jitter.brightness == (0.6, 1.4)

    (rgb_gray,) = [op for op in rgb_ops if isinstance(op, v2.RandomGrayscale)]
    assert rgb_gray.p == 0.2
    (rgb_jitter,) = [op for op in rgb_ops if isinstance(op, v2.ColorJitter)]
    assert rgb_jitter.saturation == (0.6, 1.4)
    assert rgb_jitter.hue == (-0.1, 0.1)


def test_the_same_recipe_runs_on_one_and_three_channel_sources() -> None:
    torch.manual_seed(1)
    gray_recipe = ViewRecipe(image_size=16, channels=1, jitter_prob=1.0, blur_prob=1.0)
    assert PerSampleViews(gray_recipe)(textured(1)).shape == (2, 1, 16, 16)
    rgb_recipe = ViewRecipe(image_size=16, channels=3, jitter_prob=1.0, grayscale_prob=1.0)
    assert PerSampleViews(rgb_recipe)(textured(3)).shape == (2, 3, 16, 16)
    # A grayscale source is expanded for an RGB recipe.
    views = PerSampleViews(ViewRecipe(image_size=16, channels=3, **DETERMINISTIC))(textured(1))
    assert views.shape == (2, 3, 16, 16)
    torch.testing.assert_close(views[:, 0], views[:, 2], rtol=0, atol=1e-6)


def test_normalisation_statistics_are_applied() -> None:
    mean, std = (0.1, 0.4, 0.7), (0.5, 0.25, 0.2)
    recipe = ViewRecipe(image_size=16, channels=3, mean=mean, std=std, **DETERMINISTIC)
    values = torch.tensor([51, 102, 204], dtype=torch.uint8)  # 0.2, 0.4, 0.8
    image = values.view(3, 1, 1).expand(3, 24, 24).contiguous()
    views = PerSampleViews(recipe)(image)
    for c in range(3):
        expected = (values[c].item() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(views[:, c], torch.full_like(views[:, c], expected))


def test_single_value_statistics_apply_to_every_channel() -> None:
    recipe = ViewRecipe(image_size=8, channels=3, mean=(0.5,), std=(0.25,), **DETERMINISTIC)
    views = PerSampleViews(recipe)(torch.full((3, 8, 8), 255, dtype=torch.uint8))
    torch.testing.assert_close(views, torch.full_like(views, 2.0))


def test_deterministic_recipe_agrees_with_the_batched_path() -> None:
    recipe = ViewRecipe(
        image_size=12, channels=3, mean=(0.3, 0.4, 0.5), std=(0.2, 0.3, 0.4), **DETERMINISTIC
    )
    image = textured(3, size=12)
    per_sample = PerSampleViews(recipe)(image)
    batched = BatchedViews(recipe)(image.unsqueeze(0))[:, 0]
    torch.testing.assert_close(per_sample, batched, rtol=0, atol=1e-5)
