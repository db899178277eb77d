"""Where the batched view maker's time goes: each op of one view, timed alone on the
batch it sees in the pipeline, at 32 px (the ``cifar`` recipe) and 224 px (``imagenet``,
blur at kernel 23), RGB, on this machine's threads.

    python scripts/profile_augment.py [--batch32 512] [--batch224 32] [--repeats 7]

Prints a markdown table: milliseconds per batch for each op (median of ``--repeats``
after a warm-up), its share of the sum, and the whole view's time and views/s measured
end to end (``BatchedViews``' two views, halved). Ops drawn with a probability (jitter 0.8,
blur 0.5, grayscale 0.2, solarise) are timed on every image of the batch; the share
column weights them by their probability, as the pipeline applies them. The jitter ops
are timed as the pipeline runs them (``torch.compile``-fused, ``batched._FUSED``) and,
for comparison, eagerly (share 0: not run). The sum of the shares leaves out the
pipeline's own data movement (the jitter's regrouping by per-sample order, the subsets
of grayscale and blur), which the end-to-end row includes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from contrastive.transforms import BatchedViews, preset
from contrastive.transforms.batched import (
    _FUSED,
    adjust_hue,
    gaussian_blur,
    grayscale,
    normalize,
    resized_crop,
    sample_crop_boxes,
    solarize,
    to_float,
)


def median_ms(function: Callable[[], object], repeats: int) -> float:
    for _ in range(3):  # warm-up (and torch.compile's first calls: block sizes 1, 2, ...)
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def profile(name: str, batch: int, repeats: int) -> list[str]:
    recipe = preset(name)
    size = recipe.image_size
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)
    images = to_float(source)
    boxes = sample_crop_boxes(batch, recipe.crop_scale, recipe.log_ratio, generator)
    flip = torch.rand(batch, generator=generator) < 0.5
    views = resized_crop(images, boxes, flip, size)
    factors = torch.empty(batch).uniform_(0.2, 1.8, generator=generator)
    hues = torch.empty(batch).uniform_(-0.2, 0.2, generator=generator)
    view4 = (-1, 1, 1, 1)
    sigma = torch.empty(batch).uniform_(0.1, 2.0, generator=generator)
    mean, std = recipe.channel_stats()

    def contrast() -> object:
        luma = grayscale(views.mean(dim=(2, 3), keepdim=True))
        return views.lerp(luma.expand_as(views), (1 - factors).view(view4)).clamp_(0, 1)

    def saturation() -> object:
        return views.lerp(grayscale(views).expand_as(views), (1 - factors).view(view4)).clamp_(0, 1)

    ops: list[tuple[str, float, Callable[[], object]]] = [
        ("uint8 -> float", 1.0, lambda: to_float(source)),
        (
            "crop boxes (draw)",
            1.0,
            lambda: sample_crop_boxes(batch, recipe.crop_scale, recipe.log_ratio, generator),
        ),
        ("crop + resize + flip", 1.0, lambda: resized_crop(images, boxes, flip, size)),
        ("brightness (eager)", 0, lambda: (views * factors.view(view4)).clamp_(0, 1)),
        ("contrast (eager)", 0, contrast),
        ("saturation (eager)", 0, saturation),
        ("hue (eager)", 0, lambda: adjust_hue(views, hues)),
        (
            "brightness (fused, as run)",
            recipe.jitter_prob,
            lambda: _FUSED["brightness"](views, factors),
        ),
        (
            "contrast (fused, as run)",
            recipe.jitter_prob,
            lambda: _FUSED["contrast"](views, factors),
        ),
        (
            "saturation (fused, as run)",
            recipe.jitter_prob,
            lambda: _FUSED["saturation"](views, factors),
        ),
        ("hue (fused, as run)", recipe.jitter_prob, lambda: _FUSED["hue"](views, hues)),
        (
            "grayscale",
            recipe.grayscale_prob,
            lambda: grayscale(views).expand(-1, 3, -1, -1).clone(),
        ),
    ]
    if recipe.blur_prob > 0:
        ops.append(
            (
                f"blur (kernel {recipe.blur_kernel_size})",
                recipe.blur_prob,
                lambda: gaussian_blur(views, sigma, recipe.blur_kernel_size),
            )
        )
    if recipe.solarize_prob > 0:
        ops.append(("solarise", recipe.solarize_prob, lambda: solarize(views, 0.5)))
    ops.append(("normalise", 1.0, lambda: normalize(views, mean, std)))
    timed = [(op, prob, median_ms(fn, repeats)) for op, prob, fn in ops]
    expected = sum(prob * ms for _, prob, ms in timed)
    maker = BatchedViews(recipe)  # two views: half of it is one view
    whole = median_ms(lambda: maker(source, generator), repeats) / recipe.num_views
    rows = [
        f"| {name} ({size} px, batch {batch}) | {op} | {prob:g} | {ms:.2f} | "
        f"{100 * prob * ms / expected:.0f}% |"
        for op, prob, ms in timed
    ]
    rows.append(
        f"| {name} ({size} px, batch {batch}) | **one whole view** (end to end) | | "
        f"**{whole:.2f}** | {batch / whole * 1000:,.0f} views/s |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch32", type=int, default=512)
    parser.add_argument("--batch224", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| recipe | op | probability | ms per batch | share of a view |")
    print("| --- | --- | --- | --- | --- |")
    for line in profile("cifar", args.batch32, args.repeats):
        print(line)
    for line in profile("imagenet", args.batch224, args.repeats):
        print(line)


if __name__ == "__main__":
    main()
