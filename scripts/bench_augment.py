"""Two-view SimCLR augmentation throughput (views/second): ours batched against per-sample
pipelines in a DataLoader, lightly's ``SimCLRTransform`` included, in one run.

Same recipe for every pipeline (our presets ``fashion_mnist``: 28 px grayscale,
``cifar``: 32 px RGB, batch 512; ``imagenet``: 224 px RGB with blur at kernel 23, batch
64), synthetic uint8 images, on the CPU. The batched path runs
in the main process with torch's threads; the per-sample pipelines run in a DataLoader
with ``--workers`` worker processes (the same cores). Each figure is the median over
``--repeats`` passes, after one warm-up pass; the whole table is measured ``--runs``
times (3) and each figure is the median of the runs, with their spread. Needs the bench
extra for lightly and kornia (``pip install -e '.[bench]'``); a peer not installed is left out.

With ``--device cuda`` the batched pipelines (ours, kornia) take uint8 batches already on the
GPU and each pass is timed between ``torch.cuda.synchronize()`` calls; the per-sample
pipelines still run in CPU DataLoader workers (as a GPU run of that path does).

    python scripts/bench_augment.py
    python scripts/bench_augment.py --device cuda
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from contrastive.transforms import (
    BatchedViews,
    PerSampleViews,
    ViewRecipe,
    build_view_transform,
    preset,
)

BATCH = 512


class Images(Dataset[Any]):
    """``count`` random uint8 images, as tensors or as PIL images, through ``transform``."""

    def __init__(self, images: torch.Tensor, transform: Callable[[Any], Any], pil: bool):
        self.images, self.transform, self.pil = images, transform, pil

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Any:
        image = self.images[index]
        if self.pil:
            array = image.permute(1, 2, 0).squeeze(-1).numpy()
            return self.transform(Image.fromarray(array))
        return self.transform(image)


def two_views(transform: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda image: torch.stack([transform(image), transform(image)])


def lightly_available() -> bool:
    try:
        import lightly.transforms  # noqa: F401
    except ImportError:
        return False
    return True


def lightly_transform(recipe: ViewRecipe) -> Callable[[Any], Any]:
    from lightly.transforms import SimCLRTransform

    grayscale = recipe.channels == 1
    views = SimCLRTransform(
        input_size=recipe.image_size,
        cj_prob=recipe.jitter_prob,
        cj_bright=recipe.brightness,
        cj_contrast=recipe.contrast,
        cj_sat=0.0 if grayscale else recipe.saturation,
        cj_hue=0.0 if grayscale else recipe.hue,
        min_scale=recipe.crop_scale[0],
        random_gray_scale=0.0 if grayscale else recipe.grayscale_prob,
        gaussian_blur=recipe.blur_prob,
        sigmas=recipe.blur_sigma,
        hf_prob=recipe.flip_prob,
        normalize={"mean": list(recipe.mean), "std": list(recipe.std)},
    )
    return lambda image: torch.stack(views(image))


def time_loader(loader: DataLoader[Any], batches: int, repeats: int) -> float:
    """Median seconds per batch over ``repeats`` passes of ``batches`` batches."""
    per_batch = []
    iterator = iter(loader)
    for _ in range(batches):  # warm-up: workers started, first batches prefetched
        next(iterator)
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        per_batch.append((time.perf_counter() - started) / batches)
    return statistics.median(per_batch)


def kornia_views(
    recipe: ViewRecipe, device: str = "cpu"
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The recipe as kornia's batched augmentation (per-sample parameters too), two views;
    ``None`` if kornia is not installed."""
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    ops: list[Any] = [
        K.RandomResizedCrop(
            (recipe.image_size, recipe.image_size), scale=recipe.crop_scale, ratio=recipe.crop_ratio
        ),
        K.RandomHorizontalFlip(p=recipe.flip_prob),
    ]
    if recipe.channels == 3:
        jitter = (recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)
        ops.append(K.ColorJitter(*jitter, p=recipe.jitter_prob))
        ops.append(K.RandomGrayscale(p=recipe.grayscale_prob))
    else:  # kornia's saturation and hue need RGB; the grayscale recipe has neither
        ops.append(K.ColorJitter(recipe.brightness, recipe.contrast, p=recipe.jitter_prob))
    if recipe.blur_prob > 0:
        size = recipe.blur_kernel_size
        ops.append(K.RandomGaussianBlur((size, size), recipe.blur_sigma, p=recipe.blur_prob))
    ops.append(K.Normalize(torch.tensor(recipe.mean), torch.tensor(recipe.std)))
    augment = K.AugmentationSequential(*ops).to(device)

    def views(images: torch.Tensor) -> torch.Tensor:
        batch = images.float().div_(255)
        return torch.stack([augment(batch), augment(batch)])

    return views


def time_batched(
    images: torch.Tensor, views: Callable[[torch.Tensor], torch.Tensor], batches: int, repeats: int
) -> float:
    """Median seconds per batch of ``views`` over ``repeats`` passes of ``batches`` batches,
    after a warm-up pass, in this process (on the images' device)."""
    sync = torch.cuda.synchronize if images.is_cuda else lambda: None
    for b in range(batches):  # warm-up pass, as for the loaders
        views(images[(b * BATCH) % len(images) :][:BATCH])
    per_batch = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        for b in range(batches):
            views(images[(b * BATCH) % len(images) :][:BATCH])
        sync()
        per_batch.append((time.perf_counter() - started) / batches)
    return statistics.median(per_batch)


# Batch size and batches per pass of each recipe: the 224 px recipe (blur at kernel 23)
# costs about 50x a 32 px view, so it runs smaller batches.
SIZES = {"fashion_mnist": (512, 8), "cifar": (512, 8), "imagenet": (64, 2)}


def measure(recipes: list[str], workers: int, repeats: int, device: str) -> dict[str, Any]:
    """Seconds per batch of every pipeline for every recipe: one run of the table."""
    global BATCH
    seconds: dict[str, dict[str, float]] = {}
    # Every batched figure first, so no DataLoader worker is still winding down meanwhile.
    for name in recipes:
        recipe = preset(name)
        BATCH, batches = SIZES[name]
        count = BATCH * (batches * (repeats + 1) + 1)
        shape = (count, recipe.channels, recipe.image_size, recipe.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        ours = functools.partial(BatchedViews(recipe), generator=generator)
        seconds[name] = {"ours, batched": time_batched(images, ours, batches, repeats)}
        kornia = kornia_views(recipe, device)
        if kornia is not None:
            seconds[name]["kornia, batched (main process)"] = time_batched(
                images, kornia, batches, repeats
            )
    for name in recipes:
        recipe = preset(name)
        BATCH, batches = SIZES[name]
        count = BATCH * (batches * (repeats + 1) + 1)
        shape = (count, recipe.channels, recipe.image_size, recipe.image_size)
        images = torch.randint(0, 256, shape, dtype=torch.uint8)
        pipelines: dict[str, tuple[Callable[[Any], Any], bool]] = {
            "torchvision v2 on tensors (ours, per-sample)": (PerSampleViews(recipe), False),
            "torchvision v2 on PIL images": (
                two_views(v2.Compose([v2.ToImage(), build_view_transform(recipe)])),
                True,
            ),
        }
        if lightly_available():
            pipelines["lightly SimCLRTransform"] = (lightly_transform(recipe), True)
        for label, (transform, pil) in pipelines.items():
            loader = DataLoader(
                Images(images, transform, pil),
                batch_size=BATCH,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            seconds[name][label] = time_loader(loader, batches, repeats)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3, help="whole tables: median and spread")
    parser.add_argument("--recipes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="batched paths")
    args = parser.parse_args()

    runs = [
        measure(args.recipes, args.workers, args.repeats, args.device) for _ in range(args.runs)
    ]
    where = f"CPU, {os.cpu_count()} cores"
    if args.device == "cuda":
        where = f"batched on {torch.cuda.get_device_name()} (torch {torch.__version__}), {where}"
    print(
        f"\n{where}; 2 views; per-sample pipelines in a DataLoader with {args.workers} "
        f"workers; each run the median of {args.repeats} passes; {args.runs} runs: the "
        "median views/s [lowest - highest], and the median of the runs' ratios\n"
    )
    print("| recipe | pipeline | views/s | ours batched / this |")
    print("| --- | --- | --- | --- |")
    for name in args.recipes:
        recipe = preset(name)
        batch = SIZES[name][0]
        size = f"{name} ({recipe.image_size} px, {recipe.channels} ch, batch {batch})"
        for label in runs[0][name]:
            rates = sorted(2 * batch / run[name][label] for run in runs)
            ratios = [run[name][label] / run[name]["ours, batched"] for run in runs]
            spread = f" [{rates[0]:,.0f} - {rates[-1]:,.0f}]" if len(runs) > 1 else ""
            print(
                f"| {size} | {label} | {statistics.median(rates):,.0f}{spread} | "
                f"{statistics.median(ratios):.1f}x |"
            )


if __name__ == "__main__":
    main()
