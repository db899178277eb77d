r"""Classification losses: negative log-likelihood, cross entropy (hard or soft targets), sigmoid BCE.

Thin wrappers of :mod:`torch.nn.functional` (which already computes them stably, in float32
under autocast); the docstrings state the formulas. All losses are means over the batch.
"""

from __future__ import annotations

import math
import numbers

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "nll_loss",
]


def _check_label_smoothing(label_smoothing: float) -> float:
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not math.isfinite(label_smoothing)
        or not 0.0 <= label_smoothing < 1.0
    ):
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def nll_loss(log_probs: Tensor, target: Tensor) -> Tensor:
    r"""Negative log-likelihood of the target classes, averaged over the batch.

    .. math::

        \mathcal{L} = -\frac{1}{N} \sum_{n=1}^{N} \log p_{n, y_n}

    Args:
        log_probs: (N, K) log-probabilities, e.g. the output of ``log_softmax``.
        target: (N,) long class indices in ``[0, K)``.

    Returns:
        Scalar loss.

    Examples:
        >>> import torch
        >>> log_probs = torch.log(torch.tensor([[0.5, 0.5], [0.1, 0.9]]))
        >>> round(nll_loss(log_probs, torch.tensor([0, 1])).item(), 4)  # -(ln .5 + ln .9) / 2
        0.3993
    """
    return F.nll_loss(log_probs, target)


def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    r"""Softmax cross entropy with hard or soft targets and optional label smoothing.

    .. math::

        \mathcal{L} = -\frac{1}{N} \sum_{n=1}^{N} \sum_{k=1}^{K}
            q_{nk} \log \mathrm{softmax}(z_n)_k,
        \qquad q_n = (1 - \varepsilon)\, t_n + \frac{\varepsilon}{K}

    where ``t_n`` is the one-hot of the class index (hard target) or the given probability
    vector (soft target) and ``eps = label_smoothing`` (Szegedy et al. 2016, "Rethinking the
    Inception Architecture"). With a one-hot soft target the result equals the hard-target one.

    Args:
        logits: (N, K) unnormalised scores.
        target: (N,) long class indices, or (N, K) float probabilities (rows summing to 1).
        label_smoothing: ``eps`` in ``[0, 1)``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if ``label_smoothing`` is not in ``[0, 1)``.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, 0.0]])
        >>> round(cross_entropy(logits, torch.tensor([0])).item(), 4)
        0.2395
        >>> round(cross_entropy(logits, torch.tensor([[1.0, 0.0, 0.0]])).item(), 4)
        0.2395
        >>> round(cross_entropy(logits, torch.tensor([0]), label_smoothing=0.3).item(), 4)
        0.6395
    """
    label_smoothing = _check_label_smoothing(label_smoothing)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def binary_cross_entropy_with_logits(logits: Tensor, target: Tensor) -> Tensor:
    r"""Sigmoid binary cross entropy on logits, averaged over all elements, computed stably.

    .. math::

        \mathcal{L} = -\frac{1}{M} \sum_{m} \left[ y_m \log \sigma(x_m)
            + (1 - y_m) \log (1 - \sigma(x_m)) \right]
        = \frac{1}{M} \sum_{m} \left[ \max(x_m, 0) - x_m y_m + \log(1 + e^{-|x_m|}) \right]

    The right-hand form (used by torch) never overflows, whatever the size of the logits.

    Args:
        logits: unnormalised scores of any shape, e.g. (N,) or (N, K).
        target: probabilities in ``[0, 1]`` of the same shape.

    Returns:
        Scalar loss (mean over all ``M`` elements).

    Raises:
        ValueError: if the shapes differ.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([0.0, 1000.0])
        >>> round(binary_cross_entropy_with_logits(logits, torch.tensor([1.0, 0.0])).item(), 4)
        500.3466
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    return F.binary_cross_entropy_with_logits(logits, target)


class NLLLoss(nn.Module):
    r"""Module form of :func:`nll_loss`: :math:`-\frac{1}{N} \sum_n \log p_{n, y_n}`.

    Shape:
        - ``log_probs``: (N, K); ``target``: (N,) long -> scalar.

    Examples:
        >>> import torch
        >>> log_probs = torch.log(torch.tensor([[0.25, 0.75]]))
        >>> round(NLLLoss()(log_probs, torch.tensor([1])).item(), 4)
        0.2877
    """

    def forward(self, log_probs: Tensor, target: Tensor) -> Tensor:
        return nll_loss(log_probs, target)


class CrossEntropyLoss(nn.Module):
    r"""Module form of :func:`cross_entropy`, with label smoothing ``eps``.

    :math:`-\frac{1}{N} \sum_n \sum_k q_{nk} \log \mathrm{softmax}(z_n)_k` with
    :math:`q_n = (1 - \varepsilon) t_n + \varepsilon / K`.

    Args:
        label_smoothing: ``eps`` in ``[0, 1)``.

    Raises:
        ValueError: if ``label_smoothing`` is not in ``[0, 1)``.

    Shape:
        - ``logits``: (N, K); ``target``: (N,) long or (N, K) float -> scalar.

    Examples:
        >>> import torch
        >>> criterion = CrossEntropyLoss(label_smoothing=0.1)
        >>> round(criterion(torch.zeros(2, 4), torch.tensor([0, 3])).item(), 4)  # log(4)
        1.3863
        >>> CrossEntropyLoss(label_smoothing=1.0)
        Traceback (most recent call last):
        ...
        ValueError: label_smoothing must be in [0, 1), got 1.0
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(logits, target, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"


class BCEWithLogitsLoss(nn.Module):
    r"""Module form of :func:`binary_cross_entropy_with_logits` (sigmoid BCE, mean).

    Shape:
        - ``logits``: any shape; ``target``: same shape, values in ``[0, 1]`` -> scalar.

    Examples:
        >>> import torch
        >>> round(BCEWithLogitsLoss()(torch.zeros(3), torch.ones(3)).item(), 4)  # log(2)
        0.6931
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(logits, target)
