"""Classification losses against explicit float64 loop references (values and gradients)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from contrastive.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    NLLLoss,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)

RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons


def _leaf(*shape: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()


def _assert_same_value_and_grads(
    actual_fn: Callable[..., Tensor], expected_fn: Callable[..., Tensor], inputs: Sequence[Tensor]
) -> None:
    actual = actual_fn(*inputs)
    expected = expected_fn(*inputs)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    actual_grads = torch.autograd.grad(actual, list(inputs))
    expected_grads = torch.autograd.grad(expected, list(inputs))
    for actual_grad, expected_grad in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=RTOL, atol=ATOL)


def reference_log_softmax(row: Tensor) -> list[Tensor]:
    shift = max(value.detach().item() for value in row)
    log_normaliser = shift + torch.log(
        torch.stack([torch.exp(value - shift) for value in row]).sum()
    )
    return [value - log_normaliser for value in row]


def reference_cross_entropy(
    logits: Tensor, targets: Sequence[Sequence[float]], smoothing: float
) -> Tensor:
    """-(1/N) sum_n sum_k q_nk log softmax(z_n)_k with q = (1 - eps) t + eps / K."""
    num_classes = logits.shape[1]
    total = torch.zeros((), dtype=torch.float64)
    for row, target in zip(logits, targets, strict=True):
        log_probs = reference_log_softmax(row)
        for k in range(num_classes):
            smoothed = (1 - smoothing) * target[k] + smoothing / num_classes
            total = total - smoothed * log_probs[k]
    return total / logits.shape[0]


def _one_hot(classes: Sequence[int], num_classes: int) -> list[list[float]]:
    return [[1.0 if k == c else 0.0 for k in range(num_classes)] for c in classes]


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_hard_targets_match_reference(smoothing: float) -> None:
    classes = [2, 0, 4, 4, 1, 3]
    logits = _leaf(6, 5, seed=1)
    _assert_same_value_and_grads(
        lambda z: cross_entropy(z, torch.tensor(classes), label_smoothing=smoothing),
        lambda z: reference_cross_entropy(z, _one_hot(classes, 5), smoothing),
        [logits],
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_soft_targets_match_reference(smoothing: float) -> None:
    generator = torch.Generator().manual_seed(2)
    targets = torch.softmax(torch.randn(4, 3, generator=generator, dtype=torch.float64), dim=1)
    logits = _leaf(4, 3, seed=3)
    _assert_same_value_and_grads(
        lambda z: cross_entropy(z, targets, label_smoothing=smoothing),
        lambda z: reference_cross_entropy(z, targets.tolist(), smoothing),
        [logits],
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_one_hot_soft_target_equals_hard_target(smoothing: float) -> None:
    classes = torch.tensor([1, 0, 2, 2])
    logits = _leaf(4, 3, seed=4)
    soft = torch.nn.functional.one_hot(classes, 3).to(torch.float64)
    torch.testing.assert_close(
        cross_entropy(logits, soft, smoothing),
        cross_entropy(logits, classes, smoothing),
        rtol=RTOL,
        atol=ATOL,
    )


def test_cross_entropy_is_stable_for_huge_logits() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([1]))
    loss.backward()
    assert loss.item() == pytest.approx(2e4)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_label_smoothing_validation(bad: float) -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)") as error:
        CrossEntropyLoss(label_smoothing=bad)
    assert repr(bad) in str(error.value)
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(torch.zeros(1, 2), torch.tensor([0]), label_smoothing=bad)


def test_cross_entropy_module_matches_function() -> None:
    logits = _leaf(5, 4, seed=5)
    target = torch.tensor([0, 3, 1, 1, 2])
    criterion = CrossEntropyLoss(label_smoothing=0.1)
    assert "label_smoothing=0.1" in repr(criterion)
    torch.testing.assert_close(
        criterion(logits, target), cross_entropy(logits, target, 0.1), rtol=RTOL, atol=ATOL
    )


def test_nll_loss_matches_reference_and_cross_entropy() -> None:
    classes = [1, 0, 3, 3, 2]
    log_probs = torch.log_softmax(_leaf(5, 4, seed=6), dim=1).detach().requires_grad_()

    def reference(lp: Tensor) -> Tensor:
        return -torch.stack([lp[n, c] for n, c in enumerate(classes)]).sum() / len(classes)

    _assert_same_value_and_grads(
        lambda lp: nll_loss(lp, torch.tensor(classes)), reference, [log_probs]
    )
    _assert_same_value_and_grads(
        lambda lp: NLLLoss()(lp, torch.tensor(classes)), reference, [log_probs]
    )
    logits = _leaf(5, 4, seed=7)
    torch.testing.assert_close(
        nll_loss(torch.log_softmax(logits, dim=1), torch.tensor(classes)),
        cross_entropy(logits, torch.tensor(classes)),
        rtol=RTOL,
        atol=ATOL,
    )


def reference_bce(logits: Tensor, targets: Sequence[float]) -> Tensor:
    """Naive -(1/M) sum [y log sigma(x) + (1 - y) log(1 - sigma(x))]; fine for moderate x."""
    total = torch.zeros((), dtype=torch.float64)
    for logit, target in zip(logits.reshape(-1), targets, strict=True):
        probability = 1 / (1 + torch.exp(-logit))
        total = total - (
            target * torch.log(probability) + (1 - target) * torch.log(1 - probability)
        )
    return total / len(targets)


def test_bce_with_logits_matches_reference() -> None:
    logits = _leaf(3, 4, seed=8)
    generator = torch.Generator().manual_seed(9)
    targets = torch.rand(3, 4, generator=generator, dtype=torch.float64)
    targets[0] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    _assert_same_value_and_grads(
        lambda z: binary_cross_entropy_with_logits(z, targets),
        lambda z: reference_bce(z, targets.reshape(-1).tolist()),
        [logits],
    )
    _assert_same_value_and_grads(
        lambda z: BCEWithLogitsLoss()(z, targets),
        lambda z: reference_bce(z, targets.reshape(-1).tolist()),
        [logits],
    )


def test_bce_with_logits_is_stable_for_huge_logits() -> None:
    logits = torch.tensor([1000.0, -1000.0, 1000.0, -1000.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = binary_cross_entropy_with_logits(logits, target)
    loss.backward()
    assert loss.item() == pytest.approx(500.0)  # two perfect, two off by 1000
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.tensor([0.0, 0.0, 0.25, -0.25]))
    assert binary_cross_entropy_with_logits(torch.zeros(2), torch.ones(2)).item() == pytest.approx(
        math.log(2)
    )


def test_bce_with_logits_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(4,\) and \(4, 1\)"):
        binary_cross_entropy_with_logits(torch.zeros(4), torch.zeros(4, 1))
