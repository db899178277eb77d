"""Tests of the batched SimCLR views: shapes, per-sample randomness, statistics and pixels.

Pixel-level references are torchvision's ``transforms.v2.functional`` ops applied to one
sample at a time; statistical tests use a seeded ``torch.Generator`` and bounds of about 4
standard errors.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from contrastive.transforms import BatchedViews, ImageInputs, ViewRecipe, normalize, to_float
from contrastive.transforms.batched import (
    color_jitter,
    gaussian_blur,
    grayscale,
    resized_crop,
    sample_crop_boxes,
    solarize,
)
from tests.helpers.training import RECIPE

# A recipe whose only randomness is what a test switches back on.
DETERMINISTIC: dict[str, Any] = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
    mean=(0.0,),
    std=(1.0,),
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(batch: int, channels: int = 3, size: int = 24, seed: int = 0) -> Tensor:
    """uint8 noise: any two different crops give different pixels."""
    return torch.randint(
        0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=gen(seed)
    )


def within_4_se(rate: float, prob: float, n: int) -> bool:
    return abs(rate - prob) <= 4 * math.sqrt(prob * (1 - prob) / n)


# --------------------------------------------------------------------------------------------
# Shapes, dtype, normalisation, channels
# --------------------------------------------------------------------------------------------


def test_output_shape_and_dtype() -> None:
    recipe = ViewRecipe(image_size=16, channels=3, num_views=3, blur_prob=0.5, solarize_prob=0.2)
    views = BatchedViews(recipe)(textured(5, size=20), generator=gen())
    assert views.shape == (3, 5, 3, 16, 16)
    assert views.dtype == torch.float32
    assert torch.isfinite(views).all()


def test_normalised_with_the_recipe_mean_and_std() -> None:
    mean, std = (0.1, 0.4, 0.7), (0.5, 0.25, 0.2)
    recipe = ViewRecipe(
        image_size=8,
        channels=3,
        **{**DETERMINISTIC, "mean": mean, "std": std, "crop_scale": (0.3, 1.0), "flip_prob": 0.5},
    )
    values = torch.tensor([51, 102, 204], dtype=torch.uint8)  # 0.2, 0.4, 0.8
    images = values.view(1, 3, 1, 1).expand(4, 3, 12, 12).contiguous()
    views = BatchedViews(recipe)(images, generator=gen())
    for c in range(3):
        expected = (values[c].item() / 255 - mean[c]) / std[c]
        torch.testing.assert_close(views[:, :, c], torch.full_like(views[:, :, c], expected))


def test_to_float_and_normalize() -> None:
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1)
    torch.testing.assert_close(to_float(images).flatten(), torch.tensor([0.0, 1.0, 0.2]))
    floats = torch.rand(2, 3, 4, 4, generator=gen())
    assert to_float(floats).dtype == torch.float32
    assert torch.equal(to_float(floats), floats)
    out = normalize(floats, (0.1, 0.2, 0.3), (0.5, 2.0, 4.0))
    torch.testing.assert_close(out[:, 1], (floats[:, 1] - 0.2) / 2.0)


def test_grayscale_input_is_expanded_for_an_rgb_recipe() -> None:
    recipe = ViewRecipe(image_size=12, channels=3, **{**DETERMINISTIC, "crop_scale": (0.3, 1.0)})
    gray = textured(3, channels=1, size=16)
    views = BatchedViews(recipe)(gray, generator=gen())
    assert views.shape == (2, 3, 3, 12, 12)
    torch.testing.assert_close(views[:, :, 0], views[:, :, 1], rtol=0, atol=0)
    torch.testing.assert_close(views[:, :, 0], views[:, :, 2], rtol=0, atol=0)


def test_rgb_input_to_a_grayscale_recipe_is_refused() -> None:
    views = BatchedViews(ViewRecipe(image_size=8, channels=1))
    with pytest.raises(ValueError, match=r"augment\.channels=3"):
        views(textured(2, channels=3, size=8))


def test_non_4d_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        BatchedViews(ViewRecipe(image_size=8, channels=3))(torch.zeros(3, 8, 8))


def test_same_generator_seed_reproduces_the_views() -> None:
    recipe = ViewRecipe(image_size=12, channels=3, blur_prob=0.5, solarize_prob=0.3)
    images = textured(4, size=16)
    first = BatchedViews(recipe)(images, generator=gen(7))
    second = BatchedViews(recipe)(images, generator=gen(7))
    third = BatchedViews(recipe)(images, generator=gen(8))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.allclose(first, third)


# --------------------------------------------------------------------------------------------
# Independence per sample and per view
# --------------------------------------------------------------------------------------------


def test_two_views_of_the_same_image_differ() -> None:
    recipe = ViewRecipe(image_size=16, channels=3)
    views = BatchedViews(recipe)(textured(8, size=24), generator=gen())
    for i in range(8):
        assert (views[0, i] - views[1, i]).abs().max() > 1e-3, f"sample {i}"


def test_copies_of_one_image_in_a_batch_get_different_crops() -> None:
    recipe = ViewRecipe(
        image_size=16,
        channels=3,
        **{**DETERMINISTIC, "crop_scale": (0.08, 1.0), "crop_ratio": (3 / 4, 4 / 3)},
    )
    images = textured(1, size=24).expand(8, -1, -1, -1)
    views = BatchedViews(recipe)(images, generator=gen())
    for v in range(2):
        for i in range(8):
            for j in range(i + 1, 8):
                assert (views[v, i] - views[v, j]).abs().max() > 1e-3, (v, i, j)


# --------------------------------------------------------------------------------------------
# Crop box distribution
# --------------------------------------------------------------------------------------------

N_BOXES = 20_000


def _boxes(scale: tuple[float, float], ratio: tuple[float, float], seed: int = 0) -> Tensor:
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = sample_crop_boxes(N_BOXES, scale, log_ratio, generator=gen(seed))
    assert boxes.shape == (N_BOXES, 4)
    return boxes


def _assert_inside_unit_square(boxes: Tensor) -> None:
    cx, cy, w, h = boxes.unbind(1)
    eps = 1e-6
    assert (w > 0).all() and (h > 0).all()
    assert (cx - w / 2 >= -eps).all() and (cx + w / 2 <= 1 + eps).all()
    assert (cy - h / 2 >= -eps).all() and (cy + h / 2 <= 1 + eps).all()


@pytest.mark.parametrize(
    ("scale", "ratio"),
    [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.2, 0.5), (3 / 4, 4 / 3)), ((0.5, 1.0), (0.5, 2.0))],
)
def test_crop_area_and_ratio_stay_in_range(
    scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    boxes = _boxes(scale, ratio)
    _, _, w, h = boxes.double().unbind(1)
    area, log_r = w * h, (w / h).log()
    fallback = (w == 1) | (h == 1)  # torchvision's central-crop fallback: whole side
    in_range = (area >= scale[0] - 1e-5) & (area <= scale[1] + 1e-5)
    assert (in_range | fallback).all()
    assert (log_r >= math.log(ratio[0]) - 1e-5).all()
    assert (log_r <= math.log(ratio[1]) + 1e-5).all()
    _assert_inside_unit_square(boxes)


def test_crop_area_and_log_ratio_are_uniform_when_every_draw_fits() -> None:
    # sqrt(0.5 * 4/3) < 1: every draw fits, so no rejection skews the distribution.
    scale, ratio = (0.2, 0.5), (3 / 4, 4 / 3)
    _, _, w, h = _boxes(scale, ratio).double().unbind(1)
    for values, (low, high) in [
        (w * h, scale),
        ((w / h).log(), (math.log(ratio[0]), math.log(ratio[1]))),
    ]:
        counts = torch.histc(values, bins=10, min=low, max=high)
        assert counts.sum() == N_BOXES
        fractions = counts / N_BOXES
        # Per-bin standard error is 0.0021; 0.01 is about 4.7 of them.
        assert (fractions - 0.1).abs().max() < 0.01, fractions.tolist()


def test_crop_position_is_uniform_over_the_free_range() -> None:
    cx, cy, w, h = _boxes((0.2, 0.5), (3 / 4, 4 / 3)).double().unbind(1)
    for centre, side in ((cx, w), (cy, h)):
        position = (centre - side / 2) / (1 - side)  # U(0, 1) if uniform
        fractions = torch.histc(position, bins=5, min=0, max=1) / N_BOXES
        assert (fractions - 0.2).abs().max() < 0.012, fractions.tolist()


def test_crop_boxes_differ_across_samples_and_follow_the_generator() -> None:
    a = sample_crop_boxes(64, (0.08, 1.0), (math.log(3 / 4), math.log(4 / 3)), generator=gen(3))
    b = sample_crop_boxes(64, (0.08, 1.0), (math.log(3 / 4), math.log(4 / 3)), generator=gen(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a[:, 2].unique().numel() > 50


@pytest.mark.parametrize(
    ("ratio", "width", "height"),
    [((2.0, 3.0), 1.0, 0.5), ((0.25, 0.5), 0.5, 1.0), ((0.5, 2.0), 1.0, 1.0)],
)
def test_crop_fallback_is_the_largest_box_at_the_nearest_ratio(
    ratio: tuple[float, float], width: float, height: float
) -> None:
    # Area 1 fits the unit square only at ratio exactly 1, so (almost) every draw falls back.
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = sample_crop_boxes(200, (1.0, 1.0), log_ratio, generator=gen())
    torch.testing.assert_close(boxes[:, 2], torch.full((200,), width))
    torch.testing.assert_close(boxes[:, 3], torch.full((200,), height))
    _assert_inside_unit_square(boxes)


# --------------------------------------------------------------------------------------------
# Rates of the random ops
# --------------------------------------------------------------------------------------------

RATE_BATCH = 4000  # x 2 views


def test_flip_rate_and_independence_between_views() -> None:
    prob = 0.3
    recipe = ViewRecipe(image_size=8, channels=1, **{**DETERMINISTIC, "flip_prob": prob})
    ramp = torch.arange(8.0).div(7).view(1, 1, 1, 8).expand(RATE_BATCH, 1, 8, 8)
    views = BatchedViews(recipe)(ramp, generator=gen())[:, :, 0]  # (V, B, 8, 8)
    same = (views - ramp[:, 0]).abs().amax(dim=(-2, -1)) < 1e-6
    mirrored = (views - ramp[:, 0].flip(-1)).abs().amax(dim=(-2, -1)) < 1e-6
    assert (same ^ mirrored).all(), "every view must be the image or its exact mirror"
    n = mirrored.numel()
    assert within_4_se(mirrored.float().mean().item(), prob, n)
    # Views draw their own coins: P(agree) = p^2 + (1-p)^2 = 0.58, not 1.
    agree = (mirrored[0] == mirrored[1]).float().mean().item()
    assert within_4_se(agree, prob**2 + (1 - prob) ** 2, RATE_BATCH)


def test_jitter_rate_counts_samples_with_non_neutral_factors() -> None:
    prob = 0.6
    recipe = ViewRecipe(
        image_size=4,
        channels=1,
        **{
            **DETERMINISTIC,
            "jitter_prob": prob,
            "brightness": 0.4,
            "contrast": 0.0,
            "saturation": 0.0,
            "hue": 0.0,
        },
    )
    grey = torch.full((RATE_BATCH, 1, 4, 4), 0.5)
    views = BatchedViews(recipe)(grey, generator=gen())
    changed = (views - 0.5).abs().amax(dim=(-3, -2, -1)) > 1e-6  # (V, B)
    assert within_4_se(changed.float().mean().item(), prob, changed.numel())
    agree = (changed[0] == changed[1]).float().mean().item()
    assert within_4_se(agree, prob**2 + (1 - prob) ** 2, RATE_BATCH)
    # Jittered brightness is uniform in [0.6, 1.4] times 0.5.
    factors = views[changed].amax(dim=(-3, -2, -1)) / 0.5
    assert factors.min() >= 0.6 - 1e-5 and factors.max() <= 1.4 + 1e-5
    assert factors.min() < 0.65 and factors.max() > 1.35


def test_grayscale_rate() -> None:
    prob = 0.25
    recipe = ViewRecipe(image_size=4, channels=3, **{**DETERMINISTIC, "grayscale_prob": prob})
    colour = torch.tensor([0.9, 0.1, 0.3]).view(1, 3, 1, 1).expand(RATE_BATCH, 3, 4, 4)
    views = BatchedViews(recipe)(colour, generator=gen())
    luma = 0.2989 * 0.9 + 0.587 * 0.1 + 0.114 * 0.3
    is_gray = (views - luma).abs().amax(dim=(-3, -2, -1)) < 1e-5
    is_colour = (views - colour[0]).abs().amax(dim=(-3, -2, -1)) < 1e-6
    assert (is_gray ^ is_colour).all()
    assert within_4_se(is_gray.float().mean().item(), prob, is_gray.numel())


def test_blur_rate() -> None:
    prob = 0.4
    recipe = ViewRecipe(
        image_size=8,
        channels=1,
        **{**DETERMINISTIC, "blur_prob": prob, "blur_kernel_size": 3, "blur_sigma": (0.5, 2.0)},
    )
    checker = ((torch.arange(8).view(8, 1) + torch.arange(8)) % 2).float()
    images = checker.expand(RATE_BATCH, 1, 8, 8)
    views = BatchedViews(recipe)(images, generator=gen())[:, :, 0]
    blurred = (views - checker).abs().amax(dim=(-2, -1)) > 1e-3
    untouched = (views - checker).abs().amax(dim=(-2, -1)) < 1e-6
    assert (blurred ^ untouched).all()
    assert within_4_se(blurred.float().mean().item(), prob, blurred.numel())


def test_solarize_rate() -> None:
    prob = 0.2
    recipe = ViewRecipe(image_size=4, channels=1, **{**DETERMINISTIC, "solarize_prob": prob})
    views = BatchedViews(recipe)(torch.full((RATE_BATCH, 1, 4, 4), 0.8), generator=gen())
    flat = views.flatten(2)
    solarized = (flat - 0.2).abs().amax(-1) < 1e-6
    assert (solarized ^ ((flat - 0.8).abs().amax(-1) < 1e-6)).all()
    assert within_4_se(solarized.float().mean().item(), prob, solarized.numel())


# --------------------------------------------------------------------------------------------
# Pixel correctness for fixed parameters
# --------------------------------------------------------------------------------------------


def _whole(batch: int) -> Tensor:
    return torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(batch, 4)


def test_whole_image_box_without_flip_reproduces_the_input() -> None:
    images = torch.rand(4, 3, 12, 12, generator=gen())
    out = resized_crop(images, _whole(4), torch.zeros(4, dtype=torch.bool), 12)
    torch.testing.assert_close(out, images, rtol=0, atol=1e-6)


def test_flip_mirrors_exactly_per_sample() -> None:
    images = torch.rand(4, 3, 12, 12, generator=gen())
    flip = torch.tensor([True, False, True, False])
    out = resized_crop(images, _whole(4), flip, 12)
    torch.testing.assert_close(out[flip], images[flip].flip(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[~flip], images[~flip], rtol=0, atol=1e-6)


def test_quadrant_boxes_cut_the_right_pixels() -> None:
    images = torch.rand(4, 2, 16, 16, generator=gen())
    boxes = torch.tensor(
        [
            [0.25, 0.25, 0.5, 0.5],
            [0.75, 0.25, 0.5, 0.5],
            [0.25, 0.75, 0.5, 0.5],
            [0.75, 0.75, 0.5, 0.5],
        ]
    )
    out = resized_crop(images, boxes, torch.zeros(4, dtype=torch.bool), 8)
    expected = torch.stack(
        [images[0, :, :8, :8], images[1, :, :8, 8:], images[2, :, 8:, :8], images[3, :, 8:, 8:]]
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_half_size_output_of_the_whole_image_is_2x2_average_pooling() -> None:
    images = torch.rand(3, 3, 16, 16, generator=gen())
    out = resized_crop(images, _whole(3), torch.zeros(3, dtype=torch.bool), 8)
    torch.testing.assert_close(out, F.avg_pool2d(images, 2), rtol=0, atol=1e-6)


def test_upsampled_crop_interior_matches_torchvision_resized_crop() -> None:
    # Crop rows 2..7 and columns 3..7 of a 10x10 image to 12x12. The box is a window on the
    # image, so border pixels blend with the pixels just outside it (torchvision clamps to
    # the crop); the interior must agree.
    images = torch.rand(2, 3, 10, 10, generator=gen())
    top, left, height, width, size = 2, 3, 6, 5, 12
    box = torch.tensor(
        [[(left + width / 2) / 10, (top + height / 2) / 10, width / 10, height / 10]]
    )
    out = resized_crop(images, box.expand(2, 4), torch.zeros(2, dtype=torch.bool), size)
    ref = TF.resized_crop(images, top, left, height, width, [size, size], antialias=False)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-5)


def _random_rgb(batch: int = 6, size: int = 10) -> Tensor:
    return torch.rand(batch, 3, size, size, generator=gen(1))


BRIGHTNESS = torch.tensor([0.6, 1.0, 1.4, 0.8, 1.2, 1.35])
CONTRAST = torch.tensor([1.3, 0.6, 1.0, 1.4, 0.75, 0.9])
SATURATION = torch.tensor([0.7, 1.4, 0.6, 1.0, 1.25, 0.65])
HUE = torch.tensor([0.0, 0.1, -0.1, 0.45, -0.3, 0.02])


def _torchvision_jitter(image: Tensor, b: float, c: float, s: float, h: float | None) -> Tensor:
    image = TF.adjust_brightness(image, b)
    image = TF.adjust_contrast(image, c)
    if image.shape[0] == 3:
        image = TF.adjust_saturation(image, s)
        if h is not None:
            image = TF.adjust_hue(image, h)
    return image


def test_color_jitter_without_hue_matches_torchvision_per_sample() -> None:
    images = _random_rgb()
    out = color_jitter(images, BRIGHTNESS, CONTRAST, SATURATION, torch.zeros(6))
    for i in range(6):
        ref = _torchvision_jitter(
            images[i], BRIGHTNESS[i].item(), CONTRAST[i].item(), SATURATION[i].item(), None
        )
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5, msg=f"sample {i}")


def test_color_jitter_with_hue_matches_torchvision_per_sample() -> None:
    images = _random_rgb()
    out = color_jitter(images, BRIGHTNESS, CONTRAST, SATURATION, HUE)
    for i in range(6):
        ref = _torchvision_jitter(
            images[i], BRIGHTNESS[i].item(), CONTRAST[i].item(), SATURATION[i].item(), HUE[i].item()
        )
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-4, msg=f"sample {i}")


def test_hue_only_matches_torchvision_including_grey_and_saturated_pixels() -> None:
    images = _random_rgb(batch=4, size=6)
    images[:, :, 0, 0] = 0.5  # grey pixel (no hue)
    images[:, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # pure primaries
    images[:, :, 0, 2] = torch.tensor([0.0, 1.0, 0.0])
    images[:, :, 0, 3] = torch.tensor([0.0, 0.0, 1.0])
    images[:, :, 0, 4] = 0.0
    hue = torch.tensor([0.25, -0.5, 0.5, -0.17])
    ones = torch.ones(4)
    out = color_jitter(images, ones, ones, ones, hue)
    for i in range(4):
        torch.testing.assert_close(
            out[i], TF.adjust_hue(images[i], hue[i].item()), rtol=0, atol=1e-4
        )


def test_neutral_jitter_factors_leave_the_image_unchanged() -> None:
    images = _random_rgb()
    out = color_jitter(images, torch.ones(6), torch.ones(6), torch.ones(6), torch.zeros(6))
    torch.testing.assert_close(out, images, rtol=0, atol=1e-6)


def test_color_jitter_on_one_channel_matches_torchvision_brightness_and_contrast() -> None:
    images = torch.rand(6, 1, 10, 10, generator=gen(2))
    out = color_jitter(images, BRIGHTNESS, CONTRAST, SATURATION, HUE)
    assert out.shape == images.shape
    for i in range(6):
        ref = _torchvision_jitter(images[i], BRIGHTNESS[i].item(), CONTRAST[i].item(), 1.0, None)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5, msg=f"sample {i}")


def test_grayscale_matches_torchvision() -> None:
    images = _random_rgb()
    out = grayscale(images)
    assert out.shape == (6, 1, 10, 10)
    ref = TF.rgb_to_grayscale(images, num_output_channels=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    single = images[:, :1]
    assert grayscale(single) is single


@pytest.mark.parametrize("kernel_size", [3, 5, 9])
def test_gaussian_blur_matches_torchvision_per_sample(kernel_size: int) -> None:
    images = torch.rand(4, 3, 16, 14, generator=gen(3))
    sigma = torch.tensor([0.3, 0.8, 1.5, 2.0])
    out = gaussian_blur(images, sigma, kernel_size)
    assert out.shape == images.shape
    for i in range(4):
        s = sigma[i].item()
        ref = TF.gaussian_blur(images[i], [kernel_size, kernel_size], [s, s])
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5, msg=f"sample {i}")


def test_solarize_inverts_at_and_above_the_threshold() -> None:
    images = torch.tensor([0.0, 0.3, 0.49, 0.5, 0.51, 0.8, 1.0]).view(1, 1, 1, 7)
    expected = torch.tensor([0.0, 0.3, 0.49, 0.5, 0.49, 0.2, 0.0]).view(1, 1, 1, 7)
    torch.testing.assert_close(solarize(images, 0.5), expected)
    torch.testing.assert_close(solarize(images, 0.5), TF.solarize(images, 0.5))
    # Exactly at the threshold counts as "above": 0.3 -> 0.7.
    assert solarize(torch.tensor([0.3]), 0.3).item() == pytest.approx(0.7)


def test_image_inputs_augment_in_training_only() -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    inputs = ImageInputs(RECIPE, crop_scale=(0.3, 0.6))
    eval_view = inputs.eval()(images)
    assert not torch.allclose(inputs.train()(images), eval_view)
    # the full-image crop without a flip is the unaugmented image
    identity = ImageInputs(ViewRecipe(**{**RECIPE.__dict__, "flip_prob": 0.0}), (1.0, 1.0))
    torch.testing.assert_close(identity.train()(images), eval_view, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"crop_scale must be .* got \(0.0, 1.0\)"):
        ImageInputs(RECIPE, (0.0, 1.0))
