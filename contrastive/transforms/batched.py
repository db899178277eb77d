"""Batched SimCLR views made on the device that holds the batch.

torchvision's v2 transforms applied to a batch tensor draw ONE set of random parameters
for the whole batch, which is wrong for self-supervised learning. Here every parameter is
drawn per sample and per view, and each op is one vectorised kernel over the batch.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.transforms.recipe import ViewRecipe

log = logging.getLogger(__name__)

# ITU-R 601-2 luma with torchvision's coefficients (rgb_to_grayscale uses 0.2989, not 0.299).
_LUMA = (0.2989, 0.587, 0.114)


def to_float(images: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` in [0, 255] -> float32 in [0, 1]; float input is passed through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def normalize(
    images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], out: Tensor | None = None
) -> Tensor:
    """``(x - mean) / std`` per channel for ``(B, C, H, W)`` images in [0, 1] (into
    ``out`` when given)."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    shift, scale = -mean_t / std_t, 1.0 / std_t  # one pass: x / s - m / s
    if out is None:
        return torch.addcmul(shift, images, scale)
    return torch.addcmul(shift, images, scale, out=out)


def eval_images(images: Tensor, recipe: ViewRecipe) -> Tensor:
    """Unaugmented images as the backbone sees them: [0, 1], grayscale expanded to RGB if
    the recipe is RGB, resized to ``recipe.image_size`` (antialiased bilinear), normalised.
    ``(B, C, H, W)`` uint8 or float -> ``(B, recipe.channels, S, S)`` float."""
    images = to_float(images)
    if images.shape[1] == 1 and recipe.channels == 3:
        images = images.expand(-1, 3, -1, -1)
    size = recipe.image_size
    if tuple(images.shape[-2:]) != (size, size):
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
    mean, std = recipe.channel_stats()
    return normalize(images, mean, std)


def sample_crop_boxes(
    batch_size: int,
    scale: tuple[float, float],
    log_ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    max_tries: int = 10,
) -> Tensor:
    """Random-resized-crop boxes as fractions of the image, one per sample.

    Follows torchvision's ``RandomResizedCrop.get_params`` on a unit square: area
    ``s ~ U(scale)``, ``log r ~ U(log_ratio)``, width ``sqrt(s r)``, height ``sqrt(s / r)``;
    draws that do not fit are redrawn up to ``max_tries`` times, then fall back to the
    largest box of ratio clamped into range (torchvision's central-crop fallback).

    Returns ``(B, 4)`` rows of ``(centre_x, centre_y, width, height)`` in [0, 1].
    """
    width = torch.empty(batch_size, device=device)
    height = torch.empty(batch_size, device=device)
    pending = torch.ones(batch_size, dtype=torch.bool, device=device)
    for _ in range(max_tries):
        area = torch.empty(batch_size, device=device).uniform_(*scale, generator=generator)
        ratio = torch.empty(batch_size, device=device).uniform_(*log_ratio, generator=generator)
        ratio = ratio.exp()
        w, h = (area * ratio).sqrt(), (area / ratio).sqrt()
        ok = pending & (w <= 1) & (h <= 1)
        width = torch.where(ok, w, width)
        height = torch.where(ok, h, height)
        pending &= ~ok
        if not bool(pending.any()):
            break
    if bool(pending.any()):  # fallback: whole image at the nearest allowed ratio
        low, high = math.exp(log_ratio[0]), math.exp(log_ratio[1])
        fallback_ratio = min(max(1.0, low), high)
        w_fb, h_fb = (1.0, 1.0 / fallback_ratio) if fallback_ratio > 1 else (fallback_ratio, 1.0)
        width = torch.where(pending, torch.full_like(width, w_fb), width)
        height = torch.where(pending, torch.full_like(height, h_fb), height)
    centre_x = width / 2 + torch.rand(batch_size, device=device, generator=generator) * (1 - width)
    centre_y = height / 2 + torch.rand(batch_size, device=device, generator=generator) * (
        1 - height
    )
    return torch.stack([centre_x, centre_y, width, height], dim=1)  # (B, 4)


def resized_crop(images: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop each image to its box, resize to ``size`` (bilinear) and mirror where ``flip``.

    One batched ``grid_sample`` does crop, resize and flip together.
    ``images`` (B, C, H, W) float, ``boxes`` (B, 4) from :func:`sample_crop_boxes`,
    ``flip`` (B,) bool.
    """
    batch = images.shape[0]
    boxes = boxes.to(images.dtype)
    centre_x, centre_y, width, height = (column.view(-1, 1, 1) for column in boxes.unbind(dim=1))
    sign = 1.0 - 2.0 * flip.to(images.dtype).view(-1, 1, 1)
    # F.affine_grid's sampling points for theta = [[w * sign, 0, 2 cx - 1], [0, h, 2 cy - 1]]
    # (pixel centres, align_corners=False), built by broadcasting: the crop is axis-aligned,
    # so no batched matrix product is needed.
    base = (torch.arange(size, device=images.device, dtype=images.dtype) * 2 + 1) / size - 1
    grid = torch.empty(batch, size, size, 2, device=images.device, dtype=images.dtype)
    grid[..., 0] = (width * sign) * base.view(1, 1, -1) + (2 * centre_x - 1)
    grid[..., 1] = height * base.view(1, -1, 1) + (2 * centre_y - 1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: Tensor) -> Tensor:
    """Luma of ``(B, 3, H, W)`` RGB images as ``(B, 1, H, W)``; 1-channel input is returned."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def adjust_hue(images: Tensor, hue: Tensor) -> Tensor:
    """Rotate the hue of ``(B, 3, H, W)`` RGB images in [0, 1] by ``hue`` ``(B,)`` turns.

    torchvision's ``adjust_hue`` (RGB -> HSV, shift H, HSV -> RGB) without materialising
    HSV: with ``v = max``, chroma ``c = max - min`` and the hue in sixths ``h6``, channel
    ``n`` (5 for red, 3 for green, 1 for blue) is ``v - c * clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n + h6) mod 6`` (``min(k, 4 - k) = 2 - |k - 2|``), the closed form of the
    six-sector table. Grey pixels (``c = 0``) come back unchanged whatever their hue.
    """
    red, green, blue = images.unbind(dim=1)
    value = images.amax(dim=1, keepdim=True)  # (B, 1, H, W)
    chroma = value - images.amin(dim=1, keepdim=True)
    safe_chroma = torch.where(chroma > 0, chroma, 1.0).squeeze(1)
    max_value = value.squeeze(1)
    chroma_plane = chroma.squeeze(1)
    # hue x 6 before the shift, one division: (g - b) / c, (b - r) / c + 2, (r - g) / c + 4
    numerator = torch.where(
        max_value == red,
        green - blue,
        torch.where(
            max_value == green, blue - red + 2 * chroma_plane, red - green + 4 * chroma_plane
        ),
    )
    sixths = numerator.div_(safe_chroma).add_(6 * hue.view(-1, 1, 1))
    sixths = torch.remainder(sixths, 6.0).unsqueeze(1)  # (B, 1, H, W) in [0, 6)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=images.device, dtype=images.dtype)
    k = sixths + offsets.view(1, 3, 1, 1)  # (B, 3, H, W) in [1, 11)
    k = torch.where(k >= 6.0, k - 6.0, k)  # (n + h6) mod 6
    ramp = k.sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # clamp(min(k, 4 - k), 0, 1)
    return ramp.mul_(chroma).neg_().add_(value)


def _brightness(images: Tensor, factor: Tensor) -> Tensor:
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def _contrast(images: Tensor, factor: Tensor) -> Tensor:
    # _blend(x, y, f) = f x + (1 - f) y is x.lerp(y, 1 - f); y: the mean luma, (B, 1, 1, 1)
    mean = grayscale(images.mean(dim=(2, 3), keepdim=True))
    return images.lerp(mean.expand_as(images), (1 - factor).view(-1, 1, 1, 1)).clamp_(0, 1)


def _saturation(images: Tensor, factor: Tensor) -> Tensor:
    gray = grayscale(images).expand_as(images)
    return images.lerp(gray, (1 - factor).view(-1, 1, 1, 1)).clamp_(0, 1)


# The jitter ops in torchvision's ColorJitter numbering (fn_idx): 0 brightness,
# 1 contrast, 2 saturation, 3 hue.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


class _Fused:
    """``function`` through ``torch.compile`` (dynamic shapes: one compilation for every
    batch size), which fuses its elementwise chain into one pass over the pixels; eager
    when ``enabled`` is off or the compiler cannot run here (a warning, once)."""

    enabled = True

    def __init__(self, function: Any) -> None:
        self.function = function
        self.compiled: Any = None
        self.failed = False
        functools.update_wrapper(self, function)

    def __call__(self, *args: Tensor) -> Tensor:
        if not _Fused.enabled or self.failed or torch.compiler.is_compiling():
            return self.function(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.function, dynamic=True)
        try:
            return self.compiled(*args)
        except Exception as error:  # no C++ compiler, an unsupported device, ...
            self.failed = True
            log.warning(
                "torch.compile of %s failed (%s: %s); views are made eagerly (slower, same values)",
                self.function.__name__,
                type(error).__name__,
                str(error).splitlines()[0][:200] if str(error) else "",
            )
            return self.function(*args)


_FUSED = {
    name: _Fused(op)
    for name, op in zip(JITTER_OPS, (_brightness, _contrast, _saturation, adjust_hue), strict=True)
}


def random_jitter_order(
    batch: int, ops: int = 4, generator: torch.Generator | None = None, device: Any = "cpu"
) -> Tensor:
    """A uniformly random order of ``ops`` jitter ops per sample, ``(B, ops)`` rows that
    are permutations of ``0 .. ops-1`` (torchvision's ``ColorJitter`` draws
    ``torch.randperm(4)`` per image)."""
    keys = torch.rand(batch, ops, device=device, generator=generator)
    return keys.argsort(dim=1)


def color_jitter(
    images: Tensor,
    brightness: Tensor,
    contrast: Tensor,
    saturation: Tensor,
    hue: Tensor,
    order: Tensor | None = None,
) -> Tensor:
    """Brightness, contrast, saturation and hue, each with a per-sample factor ``(B,)``.

    Matches torchvision's ``adjust_*`` functions for those factors. ``order`` ``(B, k)``
    gives each sample's order of the ops, as indices into :data:`JITTER_OPS` (a row of
    :func:`random_jitter_order` over the ``k`` ops in play, mapped to their indices), as
    torchvision's ``ColorJitter`` permutes them per image; without it, the fixed order
    brightness, contrast, saturation, hue (every op). Saturation and hue do nothing to
    1-channel images. Factors of 1 (and hue 0) leave an image unchanged. ``images`` is not
    changed.
    """
    views = images.clone()
    rows = torch.arange(images.shape[0], device=images.device)
    jitter_rows(views, rows, (brightness, contrast, saturation, hue), order)
    return views


def jitter_rows(
    views: Tensor, rows: Tensor, factors: tuple[Tensor, ...], order: Tensor | None = None
) -> None:
    """:func:`color_jitter` of ``views[rows]``, written back in place; ``factors`` and
    ``order`` have one row per entry of ``rows``.

    The rows are grouped by the op they need at each stage (one gather when the grouping
    changes), so each op runs once per stage on a contiguous block: one gather in, one
    scatter out, and an op call per op and stage, whatever the mix of orders.
    """
    count = rows.shape[0]
    if order is None:
        order = torch.arange(4, device=views.device).expand(count, 4)
    if views.shape[1] != 3:  # saturation and hue are the identity on grayscale: drop them
        keep = (order < 2).nonzero()[:, 1].view(count, -1)
        order = order.gather(1, keep)
    if count == 0 or order.shape[1] == 0:
        return
    local = torch.arange(count, device=views.device)  # x[j] is entry local[j] of rows
    x: Tensor | None = None
    for stage in range(order.shape[1]):
        needed = order[local, stage]
        if bool((needed[1:] < needed[:-1]).any()):
            regroup = needed.argsort(stable=True)
            local, needed = local[regroup], needed[regroup]
            x = None if x is None else x[regroup]
        if x is None:
            x = views[rows[local]]  # the first gather, already grouped
        start = 0
        for op, size in enumerate(torch.bincount(needed, minlength=4).tolist()):
            if size:
                block = slice(start, start + size)
                x[block] = _FUSED[JITTER_OPS[op]](x[block], factors[op][local[block]])
            start += size
    assert x is not None
    views[rows[local]] = x


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-sample ``sigma`` ``(B,)`` and reflect padding."""
    batch, channels, height, width = images.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma.view(-1, 1) ** 2))  # (B, K)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B*C, K)
    flat = images.reshape(1, batch * channels, height, width)  # (1, B*C, H, W)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, kernel_size), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)


def solarize(images: Tensor, threshold: float) -> Tensor:
    """Invert pixels at or above ``threshold``."""
    return torch.where(images >= threshold, 1.0 - images, images)


def augmented_images(
    images: Tensor,
    recipe: ViewRecipe,
    crop_scale: tuple[float, float],
    generator: torch.Generator | None = None,
) -> Tensor:
    """The supervised training augmentation of the evaluation jobs: a random resized crop
    (area fraction in ``crop_scale``, the recipe's aspect ratios) and a horizontal flip
    (``recipe.flip_prob``), then normalisation as in :func:`eval_images`. No colour
    augmentation. ``(B, C, H, W)`` uint8 or float -> ``(B, recipe.channels, S, S)`` float."""
    images = to_float(images)
    if images.shape[1] == 1 and recipe.channels == 3:
        images = images.expand(-1, 3, -1, -1)
    batch, device = images.shape[0], images.device
    boxes = sample_crop_boxes(batch, crop_scale, recipe.log_ratio, generator, device)
    flip = torch.rand(batch, device=device, generator=generator) < recipe.flip_prob
    views = resized_crop(images, boxes, flip, recipe.image_size)
    mean, std = recipe.channel_stats()
    return normalize(views, mean, std)


class ImageInputs(nn.Module):
    """Raw labelled batches -> backbone inputs for the evaluation jobs.

    In eval mode, or without ``crop_scale``: :func:`eval_images` (what the backbone saw in
    pretraining, unaugmented). In train mode with ``crop_scale``: :func:`augmented_images`.
    """

    def __init__(self, recipe: ViewRecipe, crop_scale: tuple[float, float] | None = None) -> None:
        super().__init__()
        if crop_scale is not None and not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(
                f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}"
            )
        self.recipe = recipe
        self.crop_scale = (
            None if crop_scale is None else (float(crop_scale[0]), float(crop_scale[1]))
        )

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if self.training and self.crop_scale is not None:
            return augmented_images(images, self.recipe, self.crop_scale)
        return eval_images(images, self.recipe)

    def extra_repr(self) -> str:
        return f"image_size={self.recipe.image_size}, crop_scale={self.crop_scale}"


class BatchedViews(nn.Module):
    """Make ``num_views`` SimCLR views of a batch in one pass on its device.

    Input ``(B, C, H, W)`` uint8 (or float in [0, 1]); output ``(V, B, C, S, S)`` float,
    normalised, with ``S = recipe.image_size``. Grayscale sources may be expanded to RGB by
    setting ``recipe.channels=3``; the reverse is refused.

    Examples:
        >>> from contrastive.transforms import ViewRecipe
        >>> views = BatchedViews(ViewRecipe(image_size=16, channels=3))
        >>> views(torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)).shape
        torch.Size([2, 4, 3, 16, 16])
    """

    def __init__(self, recipe: ViewRecipe) -> None:
        super().__init__()
        self.recipe = recipe

    def _one_view(
        self,
        images: Tensor,
        generator: torch.Generator | None,
        out: Tensor | None = None,
        local: bool = False,
    ) -> Tensor:
        recipe = self.recipe
        batch, device = images.shape[0], images.device
        crop_scale = recipe.local_crop_scale if local else recipe.crop_scale
        size = recipe.local_size if local else recipe.image_size
        kernel_size = recipe.local_blur_kernel_size if local else recipe.blur_kernel_size

        def uniform(low: float, high: float) -> Tensor:
            return torch.empty(batch, device=device).uniform_(low, high, generator=generator)

        def coin(prob: float) -> Tensor:
            return torch.rand(batch, device=device, generator=generator) < prob

        boxes = sample_crop_boxes(
            batch, crop_scale, recipe.log_ratio, generator=generator, device=device
        )
        views = resized_crop(images, boxes, coin(recipe.flip_prob), size)

        if recipe.jitter_prob > 0:
            apply = coin(recipe.jitter_prob)
            chosen = apply.nonzero().squeeze(1)
            strengths = (recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)
            # torchvision draws every factor, then skips the ops of strength 0
            drawn = [uniform(1 - s, 1 + s)[chosen] for s in strengths[:3]]
            drawn.append(uniform(-recipe.hue, recipe.hue)[chosen])
            active = [
                op
                for op, strength in enumerate(strengths)
                if strength > 0 and (op < 2 or views.shape[1] == 3)
            ]
            if recipe.jitter_order == "random":
                draw = random_jitter_order(len(chosen), len(active), generator, device)
            else:
                draw = torch.arange(len(active), device=device).expand(len(chosen), -1)
            order = torch.tensor(active, device=device, dtype=torch.long)[draw]
            if active:  # views is resized_crop's own tensor: write into it
                jitter_rows(views, chosen, tuple(drawn), order)
        if recipe.grayscale_prob > 0 and views.shape[1] == 3:
            chosen = coin(recipe.grayscale_prob).nonzero().squeeze(1)
            views[chosen] = grayscale(views[chosen]).expand(-1, 3, -1, -1)
        if recipe.blur_prob > 0:
            apply = coin(recipe.blur_prob)
            if bool(apply.any()):
                blurred = gaussian_blur(
                    views[apply], uniform(*recipe.blur_sigma)[apply], kernel_size
                )
                views = views.clone()
                views[apply] = blurred
        if recipe.solarize_prob > 0:
            apply = coin(recipe.solarize_prob).view(-1, 1, 1, 1)
            views = torch.where(apply, solarize(views, recipe.solarize_threshold), views)
        mean, std = self.recipe.channel_stats()
        return normalize(views, mean, std, out=out)

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The ``num_views`` global views ``(V, B, C, S, S)``."""
        return self._views(images, generator, self.recipe.num_views, local=False)

    @torch.no_grad()
    def local_views(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The ``local_views`` small views ``(L, B, C, s, s)``, ``s = recipe.local_size``
        (drawn after the global views, from the same generator)."""
        return self._views(images, generator, self.recipe.local_views, local=True)

    def _views(
        self, images: Tensor, generator: torch.Generator | None, count: int, local: bool
    ) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        images = to_float(images)
        if images.shape[1] != self.recipe.channels:
            if images.shape[1] == 1 and self.recipe.channels == 3:
                images = images.expand(-1, 3, -1, -1)
            else:
                raise ValueError(
                    f"the augmentation recipe expects {self.recipe.channels}-channel images, "
                    f"got {images.shape[1]} channels; set augment.channels={images.shape[1]}"
                )
        size = self.recipe.local_size if local else self.recipe.image_size
        views = images.new_empty((count, images.shape[0], images.shape[1], size, size))
        for view in views:  # each view normalised straight into its slot
            self._one_view(images, generator, out=view, local=local)
        return views  # (V, B, C, S, S)
