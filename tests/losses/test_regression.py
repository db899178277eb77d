"""L2 loss against an explicit float64 loop reference (values and gradients)."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from torch import Tensor

from contrastive.losses import L2Loss, l2_loss

RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons


def _leaf(*shape: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()


def reference_squares(prediction: Tensor, target: Tensor) -> list[Tensor]:
    return [(p - t) ** 2 for p, t in zip(prediction.reshape(-1), target.reshape(-1), strict=True)]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_l2_loss_matches_reference(reduction: Literal["mean", "sum"]) -> None:
    prediction, target = _leaf(3, 4, seed=1), _leaf(3, 4, seed=2)
    squares = reference_squares(prediction, target)
    expected = torch.stack(squares).sum() / (len(squares) if reduction == "mean" else 1)
    actual = l2_loss(prediction, target, reduction)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    actual_grads = torch.autograd.grad(actual, [prediction, target])
    expected_grads = torch.autograd.grad(expected, [prediction, target])
    for actual_grad, expected_grad in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=RTOL, atol=ATOL)


def test_l2_loss_none_is_elementwise_and_mean_has_no_half() -> None:
    prediction, target = _leaf(2, 3, seed=3), _leaf(2, 3, seed=4)
    expected = torch.stack(reference_squares(prediction, target)).reshape(2, 3)
    torch.testing.assert_close(l2_loss(prediction, target, "none"), expected, rtol=RTOL, atol=ATOL)
    assert l2_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == 4.0


def test_l2_loss_validation() -> None:
    with pytest.raises(ValueError, match=r"\(3,\) and \(3, 1\)"):
        l2_loss(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"reduction must be one of .* got 'avg'"):
        l2_loss(torch.zeros(3), torch.zeros(3), "avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="got 'max'"):
        L2Loss(reduction="max")  # type: ignore[arg-type]


def test_module_matches_function() -> None:
    prediction, target = _leaf(4, 2, seed=5), _leaf(4, 2, seed=6)
    for reduction in ("mean", "sum", "none"):
        criterion = L2Loss(reduction=reduction)
        assert repr(reduction) in repr(criterion)
        torch.testing.assert_close(
            criterion(prediction, target),
            l2_loss(prediction, target, reduction),
            rtol=RTOL,
            atol=ATOL,
        )
