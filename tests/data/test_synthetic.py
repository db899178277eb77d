"""The synthetic dataset: deterministic per seed, learnable, distinct across splits."""

from __future__ import annotations

import torch

from contrastive.data.sources import (
    make_synthetic,
)


def test_synthetic_is_deterministic_per_seed() -> None:
    first = make_synthetic(60, 3, 16, 3, seed=5)
    again = make_synthetic(60, 3, 16, 3, seed=5)
    other = make_synthetic(60, 3, 16, 3, seed=6)

    assert tuple(first.images.shape) == (60, 3, 16, 16) and first.images.dtype == torch.uint8
    assert first.labels.dtype == torch.int64 and first.labels.bincount().tolist() == [20] * 3
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert first.classes == ("class_0", "class_1", "class_2")
    gray = make_synthetic(10, 2, 8, 1)
    assert tuple(gray.images.shape) == (10, 1, 8, 8)


def test_synthetic_classes_are_separable_across_splits() -> None:
    train = make_synthetic(500, 10, 32, 3, seed=0, split="train")
    test = make_synthetic(500, 10, 32, 3, seed=0, split="test")
    assert not torch.equal(train.images, test.images)

    x_train = train.images.flatten(1).float()
    x_test = test.images.flatten(1).float()
    means = torch.stack([x_train[train.labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x_test, means).argmin(1)
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy > 0.9

    # Not trivially easy either: samples of one class differ from each other.
    same_class = x_train[train.labels == 0]
    assert (same_class - same_class.mean(0)).std() > 5
