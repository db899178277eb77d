"""The per-sample SimCLR view path: torchvision v2 transforms run in DataLoader workers."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

from contrastive.transforms.recipe import ViewRecipe


def build_view_transform(recipe: ViewRecipe) -> v2.Compose:
    """One view of one ``(C, H, W)`` uint8 image, as a torchvision v2 pipeline.

    Each call draws fresh random parameters, so calling it twice on the same image gives
    two independent views.
    """
    mean, std = recipe.channel_stats()
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(
            recipe.image_size, scale=recipe.crop_scale, ratio=recipe.crop_ratio, antialias=True
        ),
        v2.RandomHorizontalFlip(p=recipe.flip_prob),
    ]
    if recipe.jitter_prob > 0:
        rgb = recipe.channels == 3
        strengths = {
            "brightness": recipe.brightness,
            "contrast": recipe.contrast,
            "saturation": recipe.saturation if rgb else 0.0,
            "hue": recipe.hue if rgb else 0.0,
        }
        jitter: v2.Transform = v2.ColorJitter(**strengths)  # a random order per image
        if recipe.jitter_order == "fixed":  # one ColorJitter per op, in this order
            jitter = v2.Compose(
                [v2.ColorJitter(**{name: value}) for name, value in strengths.items() if value]
            )
        ops.append(v2.RandomApply([jitter], p=recipe.jitter_prob))
    if recipe.grayscale_prob > 0 and recipe.channels == 3:
        ops.append(v2.RandomGrayscale(p=recipe.grayscale_prob))
    if recipe.blur_prob > 0:
        blur = v2.GaussianBlur(recipe.blur_kernel_size, sigma=recipe.blur_sigma)
        ops.append(v2.RandomApply([blur], p=recipe.blur_prob))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if recipe.solarize_prob > 0:
        ops.append(v2.RandomSolarize(recipe.solarize_threshold, p=recipe.solarize_prob))
    ops.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(ops)


class PerSampleViews:
    """Callable for a Dataset: ``(C, H, W)`` uint8 image -> ``(V, C, S, S)`` float views.

    Examples:
        >>> make_views = PerSampleViews(ViewRecipe(image_size=16, channels=1))
        >>> make_views(torch.zeros(1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, recipe: ViewRecipe) -> None:
        self.recipe = recipe
        self.transform = build_view_transform(recipe)

    def __call__(self, image: Tensor) -> Tensor:
        if image.shape[0] == 1 and self.recipe.channels == 3:
            image = image.expand(3, -1, -1)
        return torch.stack([self.transform(image) for _ in range(self.recipe.num_views)])
