"""The colour jitter's random order (issue 17): each sample applies brightness, contrast,
saturation and hue in an order of its own, drawn as torchvision's ``ColorJitter`` draws it
(``torch.randperm(4)`` per image), and each order gives what torchvision's functional ops
give in that order."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import v2

from contrastive.transforms import BatchedViews, ViewRecipe
from contrastive.transforms.batched import (
    JITTER_OPS,
    color_jitter,
    jitter_rows,
    random_jitter_order,
)

FACTORS = (1.7, 0.35, 1.8, 0.3)  # far from neutral, so that the orders differ
TORCHVISION_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def in_order(image: Tensor, order: tuple[int, ...], factors: tuple[float, ...] = FACTORS) -> Tensor:
    for op in order:
        image = TORCHVISION_OPS[op](image, factors[op])
    return image


def test_random_orders_are_uniform_over_the_24_permutations_and_independent() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 48_000
    first = random_jitter_order(n, 4, generator)
    second = random_jitter_order(n, 4, generator)
    assert sorted(first[0].tolist()) == [0, 1, 2, 3]
    codes = (first * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[codes.unique()]
    assert len(counts) == 24
    p = 1 / 24
    se = math.sqrt(p * (1 - p) / n)
    assert ((counts / n - p).abs() < 4.5 * se).all(), counts
    # two draws (two views) agree on the whole order at the rate independence predicts
    same = (first == second).all(1).float().mean().item()
    assert abs(same - p) < 4.5 * se


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1)])
def test_each_order_matches_torchvision_functional_ops_in_that_order(
    order: tuple[int, ...],
) -> None:
    images = torch.rand(5, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    factors = [torch.full((5,), f) for f in FACTORS]
    out = color_jitter(images, *factors, order=torch.tensor([order] * 5))
    for i in range(5):
        torch.testing.assert_close(out[i], in_order(images[i], order), rtol=0, atol=1e-4)


def test_mixed_orders_in_one_batch_each_match_their_own() -> None:
    images = torch.rand(24, 3, 7, 7, generator=torch.Generator().manual_seed(2))
    orders = list(itertools.permutations(range(4)))
    factors = [torch.full((24,), f) for f in FACTORS]
    out = color_jitter(images, *factors, order=torch.tensor(orders))
    for i, order in enumerate(orders):
        torch.testing.assert_close(out[i], in_order(images[i], order), rtol=0, atol=1e-4)
    # negative control: the fixed order is wrong for most of them
    fixed = color_jitter(images, *factors)
    wrong = sum(
        not torch.allclose(fixed[i], in_order(images[i], o), atol=1e-4)
        for i, o in enumerate(orders)
    )
    assert wrong >= 20


def outcome_classes(image: Tensor) -> list[Tensor]:
    """The distinct results of the 24 orders on ``image``."""
    classes: list[Tensor] = []
    for order in itertools.permutations(range(4)):
        result = in_order(image, order)
        if not any(torch.allclose(result, c, atol=1e-4) for c in classes):
            classes.append(result)
    return classes


def classify(outputs: Tensor, classes: list[Tensor]) -> Tensor:
    distances = torch.stack([(outputs - c).flatten(1).abs().amax(1) for c in classes], dim=1)
    assert (distances.min(1).values < 1e-3).all()  # every output is one of the orders'
    return distances.argmin(1)


def test_the_distribution_of_orders_matches_torchvisions_color_jitter() -> None:
    """With every factor pinned (a (f, f) range), ColorJitter's only randomness is its
    order: the outcome frequencies of torchvision's and ours agree."""
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(3))
    classes = outcome_classes(image)
    assert len(classes) >= 12  # the orders are told apart
    n = 4800
    torch.manual_seed(0)
    jitter = v2.ColorJitter(*((f, f) for f in FACTORS[:3]), hue=(FACTORS[3], FACTORS[3]))
    theirs = classify(torch.stack([jitter(image) for _ in range(n)]), classes)
    factors = [torch.full((n,), f) for f in FACTORS]
    order = random_jitter_order(n, 4, torch.Generator().manual_seed(4))
    ours = classify(color_jitter(image.expand(n, -1, -1, -1), *factors, order=order), classes)
    for k in range(len(classes)):
        p_theirs, p_ours = (theirs == k).float().mean(), (ours == k).float().mean()
        p = (p_theirs + p_ours) / 2
        se = math.sqrt(max(p * (1 - p), 1e-6) * 2 / n)
        assert abs(p_theirs - p_ours) < 4.5 * se, (k, p_theirs, p_ours)


@pytest.mark.parametrize(
    ("channels", "saturation", "orders"),
    [(3, 0.4, 24), (3, 0.0, 6), (1, 0.4, 2)],  # ops of strength 0 and grey's S, H drop out
)
def test_views_draw_a_random_order_per_sample_by_default_and_fixed_on_request(
    monkeypatch: pytest.MonkeyPatch, channels: int, saturation: float, orders: int
) -> None:
    import contrastive.transforms.batched as batched

    seen: list[Tensor] = []

    def spy(views: Tensor, rows: Tensor, factors: tuple[Tensor, ...], order: Tensor) -> None:
        seen.append(order)
        jitter_rows(views, rows, factors, order)

    monkeypatch.setattr(batched, "jitter_rows", spy)
    images = torch.randint(0, 256, (3000, channels, 8, 8), dtype=torch.uint8)
    for jitter_order in ("random", "fixed"):
        seen.clear()
        recipe = ViewRecipe(
            image_size=8, channels=channels, jitter_prob=1.0, saturation=saturation,
            jitter_order=jitter_order,  # type: ignore[arg-type]
        )  # fmt: skip
        BatchedViews(recipe)(images, torch.Generator().manual_seed(5))
        order = torch.cat(seen)  # both views
        assert order.shape == (6000, {24: 4, 6: 3, 2: 2}[orders])
        distinct, counts = order.unique(dim=0, return_counts=True)
        if jitter_order == "fixed":
            assert len(distinct) == 1 and (distinct[0].diff() > 0).all()
            continue
        assert len(distinct) == orders
        p = 1 / orders
        assert ((counts / 6000 - p).abs() < 4.5 * math.sqrt(p * (1 - p) / 6000)).all()


def test_jitter_order_is_validated() -> None:
    with pytest.raises(ValueError, match="jitter_order must be one of"):
        ViewRecipe(image_size=8, channels=3, jitter_order="shuffled")  # type: ignore[arg-type]
    assert JITTER_OPS == ("brightness", "contrast", "saturation", "hue")


def test_a_compiler_that_cannot_run_falls_back_to_eager_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from contrastive.transforms import batched

    def broken(*args: object, **kwargs: object) -> object:
        def fails(*a: object) -> object:
            raise RuntimeError("InductorError: no C++ compiler found")

        return fails

    monkeypatch.setattr(torch, "compile", broken)
    fused = batched._Fused(batched._brightness)
    images, factor = torch.rand(4, 3, 5, 5), torch.full((4,), 1.5)
    with caplog.at_level("WARNING"):
        out = fused(images, factor)
        again = fused(images, factor)  # no second attempt, no second warning
    expected = batched._brightness(images, factor)
    assert torch.equal(out, expected) and torch.equal(again, expected)
    warnings = [r for r in caplog.records if "torch.compile of _brightness failed" in r.message]
    assert len(warnings) == 1 and "views are made eagerly" in warnings[0].message
