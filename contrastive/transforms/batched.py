"""Batched SimCLR views made on the device that holds the batch.

torchvision's v2 transforms applied to a batch tensor draw ONE set of random parameters
for the whole batch, which is wrong for self-supervised learning. Here every parameter is
drawn per sample and per view, and each op is one vectorised kernel over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.transforms.recipe import ViewRecipe

# ITU-R 601-2 luma with torchvision's coefficients (rgb_to_grayscale uses 0.2989, not 0.299).
_LUMA = (0.2989, 0.587, 0.114)


def to_float(images: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` in [0, 255] -> float32 in [0, 1]; float input is passed through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """``(x - mean) / std`` per channel for ``(B, C, H, W)`` images in [0, 1]."""
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


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
    centre_x, centre_y, width, height = boxes.unbind(dim=1)
    sign = 1.0 - 2.0 * flip.to(images.dtype)
    theta = torch.zeros(batch, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = width * sign
    theta[:, 0, 2] = 2 * centre_x - 1
    theta[:, 1, 1] = height
    theta[:, 1, 2] = 2 * centre_y - 1
    grid = F.affine_grid(theta, [batch, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: Tensor) -> Tensor:
    """Luma of ``(B, 3, H, W)`` RGB images as ``(B, 1, H, W)``; 1-channel input is returned."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _rgb_to_hsv(images: Tensor) -> Tensor:
    r, g, b = images.unbind(dim=1)
    max_c, _ = images.max(dim=1)
    min_c, _ = images.min(dim=1)
    delta = max_c - min_c
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    safe_max = torch.where(max_c > 0, max_c, torch.ones_like(max_c))
    saturation = delta / safe_max
    hue_r = ((g - b) / safe_delta) % 6
    hue_g = (b - r) / safe_delta + 2
    hue_b = (r - g) / safe_delta + 4
    hue = torch.where(max_c == r, hue_r, torch.where(max_c == g, hue_g, hue_b))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    return torch.stack([hue, saturation, max_c], dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    hue, saturation, value = hsv.unbind(dim=1)
    sector = torch.floor(hue * 6)
    frac = hue * 6 - sector
    sector = sector.long() % 6
    p = value * (1 - saturation)
    q = value * (1 - saturation * frac)
    t = value * (1 - saturation * (1 - frac))
    # Each sector picks (r, g, b) from (v, t, p, q): a (6, 3) lookup table over a stack.
    candidates = torch.stack([value, t, p, q], dim=1)  # (B, 4, H, W)
    table = torch.tensor(
        [[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]], device=hsv.device
    )
    index = table[sector].permute(0, 3, 1, 2)  # (B, 3, H, W)
    return candidates.gather(1, index)


def color_jitter(
    images: Tensor,
    brightness: Tensor,
    contrast: Tensor,
    saturation: Tensor,
    hue: Tensor,
) -> Tensor:
    """Brightness, contrast, saturation then hue, each with a per-sample factor ``(B,)``.

    Matches torchvision's ``adjust_*`` functions for those factors, applied in this fixed
    order (torchvision permutes the order at random; the order is not part of the recipe
    we test). Factors of 1 (and hue 0) leave an image unchanged.
    """
    view = (-1, 1, 1, 1)
    images = (images * brightness.view(view)).clamp_(0, 1)
    mean = grayscale(images).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    images = ((images - mean) * contrast.view(view) + mean).clamp_(0, 1)
    if images.shape[1] == 3:
        gray = grayscale(images)
        images = ((images - gray) * saturation.view(view) + gray).clamp_(0, 1)
        hsv = _rgb_to_hsv(images)
        hsv[:, 0] = (hsv[:, 0] + hue.view(-1, 1, 1)) % 1.0
        images = _hsv_to_rgb(hsv)
    return images


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

    def _one_view(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        recipe = self.recipe
        batch, device = images.shape[0], images.device

        def uniform(low: float, high: float) -> Tensor:
            return torch.empty(batch, device=device).uniform_(low, high, generator=generator)

        def coin(prob: float) -> Tensor:
            return torch.rand(batch, device=device, generator=generator) < prob

        boxes = sample_crop_boxes(
            batch, recipe.crop_scale, recipe.log_ratio, generator=generator, device=device
        )
        views = resized_crop(images, boxes, coin(recipe.flip_prob), recipe.image_size)

        if recipe.jitter_prob > 0:
            apply = coin(recipe.jitter_prob)

            def factor(strength: float, neutral: float = 1.0) -> Tensor:
                drawn = uniform(neutral - strength, neutral + strength)
                return torch.where(apply, drawn, torch.full_like(drawn, neutral))

            views = color_jitter(
                views,
                brightness=factor(recipe.brightness),
                contrast=factor(recipe.contrast),
                saturation=factor(recipe.saturation),
                hue=factor(recipe.hue, neutral=0.0),
            )
        if recipe.grayscale_prob > 0 and views.shape[1] == 3:
            gray = grayscale(views).expand_as(views)
            views = torch.where(coin(recipe.grayscale_prob).view(-1, 1, 1, 1), gray, views)
        if recipe.blur_prob > 0:
            apply = coin(recipe.blur_prob)
            if bool(apply.any()):
                blurred = gaussian_blur(
                    views[apply], uniform(*recipe.blur_sigma)[apply], recipe.blur_kernel_size
                )
                views = views.clone()
                views[apply] = blurred
        if recipe.solarize_prob > 0:
            apply = coin(recipe.solarize_prob).view(-1, 1, 1, 1)
            views = torch.where(apply, solarize(views, recipe.solarize_threshold), views)
        mean, std = self.recipe.channel_stats()
        return normalize(views, mean, std)

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
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
        views = [self._one_view(images, generator) for _ in range(self.recipe.num_views)]
        return torch.stack(views)  # (V, B, C, S, S)
