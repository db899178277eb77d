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
    return torch.addcmul(-mean_t / std_t, images, 1.0 / std_t)  # one pass: x / s - m / s


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
    we test). Factors of 1 (and hue 0) leave an image unchanged. ``images`` is not changed.
    """
    view = (-1, 1, 1, 1)
    # One new tensor, then everything in place: _blend(x, y, f) = f x + (1 - f) y is
    # x.lerp_(y, 1 - f).
    images = (images * brightness.view(view)).clamp_(0, 1)
    mean = grayscale(images.mean(dim=(2, 3), keepdim=True))  # mean luma, (B, 1, 1, 1)
    images.lerp_(mean.expand_as(images), (1 - contrast).view(view)).clamp_(0, 1)
    if images.shape[1] == 3:
        gray = grayscale(images).expand_as(images)
        images.lerp_(gray, (1 - saturation).view(view)).clamp_(0, 1)
        images = adjust_hue(images, hue)
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
            chosen = coin(recipe.grayscale_prob).nonzero().squeeze(1)
            views[chosen] = grayscale(views[chosen]).expand(-1, 3, -1, -1)
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
