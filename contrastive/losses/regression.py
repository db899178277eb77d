r"""Regression losses."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["L2Loss", "l2_loss"]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> Reduction:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def l2_loss(prediction: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Squared error, by default averaged over **all** elements (like ``F.mse_loss``).

    .. math::

        \mathcal{L}_{\mathrm{mean}} = \frac{1}{M} \sum_{m=1}^{M} (\hat y_m - y_m)^2

    No factor 1/2; ``"sum"`` drops the 1/M and ``"none"`` returns the element-wise squares.

    Args:
        prediction: any shape, e.g. (N, D).
        target: same shape as ``prediction`` (no broadcasting).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        Scalar for ``"mean"``/``"sum"``, else a tensor of the input shape.

    Raises:
        ValueError: on a shape mismatch or an unknown reduction.

    Examples:
        >>> import torch
        >>> prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> l2_loss(prediction, torch.zeros(2, 2))
        tensor(7.5000)
        >>> l2_loss(prediction, torch.zeros(2, 2), reduction="none")
        tensor([[ 1.,  4.],
                [ 9., 16.]])
    """
    reduction = _check_reduction(reduction)
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    return F.mse_loss(prediction, target, reduction=reduction)


class L2Loss(nn.Module):
    r"""Module form of :func:`l2_loss`: :math:`\frac{1}{M} \sum_m (\hat y_m - y_m)^2` by default.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: on an unknown reduction.

    Shape:
        - ``prediction``: any shape; ``target``: same shape -> scalar (or that shape for
          ``"none"``).

    Examples:
        >>> import torch
        >>> L2Loss(reduction="sum")(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(5.)
        >>> L2Loss(reduction="max")
        Traceback (most recent call last):
        ...
        ValueError: reduction must be one of ('mean', 'sum', 'none'), got 'max'
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        self.reduction: Reduction = _check_reduction(reduction)

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return l2_loss(prediction, target, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
