r"""Weights of the positive term of a contrastive loss: DCLW's negative von Mises-Fisher weight.

Decoupled Contrastive Learning with weighting (DCLW, Yeh et al. 2022, "Decoupled Contrastive
Learning") multiplies the positive term of pair ``n`` by

.. math::

    w_n = 2 - N \cdot \frac{\exp(\langle \hat z_{a,n}, \hat z_{b,n} \rangle / \sigma)}
        {\sum_{m=1}^{N} \exp(\langle \hat z_{a,m}, \hat z_{b,m} \rangle / \sigma)}

(cosine similarities of the two views, detached: the weights are constants for autograd), so
that the mean weight is 1 and the pairs that are already close weigh less. This is lightly's
``negative_mises_fisher_weights`` (``lightly.loss.dcl_loss``), on the same normalised inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.losses.precision import NORMALIZE_EPS, autocast_disabled, compute_dtype

__all__ = [
    "WEIGHTINGS",
    "check_sigma",
    "check_weighting",
    "positive_cosine_similarities",
    "von_mises_fisher_weights",
]

WEIGHTINGS = ("vmf",)
"""The accepted ``weighting`` values besides ``None``."""


def check_weighting(weighting: str | None) -> str | None:
    """``weighting`` if it is ``None`` or ``"vmf"``; ValueError otherwise.

    Examples:
        >>> check_weighting("vmf")
        'vmf'
        >>> check_weighting("vMF")
        Traceback (most recent call last):
        ...
        ValueError: weighting must be None (unweighted) or 'vmf' (DCLW's von Mises-Fisher weight), got 'vMF'
    """
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ValueError(
            "weighting must be None (unweighted) or 'vmf' (DCLW's von Mises-Fisher weight), "
            f"got {weighting!r}"
        )
    return weighting


def check_sigma(sigma: float) -> float:
    """``sigma`` as a float if it is a finite number > 0; ValueError otherwise.

    Examples:
        >>> check_sigma(0.5)
        0.5
        >>> check_sigma(0)
        Traceback (most recent call last):
        ...
        ValueError: sigma must be a finite number > 0, got 0
    """
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, int | float)
        or not math.isfinite(sigma)
        or sigma <= 0
    ):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def positive_cosine_similarities(z_a: Tensor, z_b: Tensor) -> Tensor:
    r"""Detached :math:`\langle \hat z_{a,n}, \hat z_{b,n} \rangle` (N,) of two (N, D) tensors,
    in float32 (float64 for float64 inputs) with autocast off.

    Examples:
        >>> positive_cosine_similarities(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]]))
        tensor([0.7071])
    """
    dtype = compute_dtype(z_a, z_b)
    with autocast_disabled(z_a.device), torch.no_grad():
        unit_a = F.normalize(z_a.detach().to(dtype), dim=1, eps=NORMALIZE_EPS)  # (N, D)
        unit_b = F.normalize(z_b.detach().to(dtype), dim=1, eps=NORMALIZE_EPS)  # (N, D)
        return (unit_a * unit_b).sum(dim=1)  # (N,)


def von_mises_fisher_weights(similarities: Tensor, sigma: float = 0.5) -> Tensor:
    r"""DCLW's weights :math:`w_n = 2 - N\, \mathrm{softmax}_n(s_n / \sigma)` of the positive
    similarities ``s`` (N,), detached; ``N`` is the length of ``s`` (the global batch when
    ``s`` was gathered from all ranks).

    .. math::

        w_n = 2 - N \frac{\exp(s_n / \sigma)}{\sum_{m=1}^{N} \exp(s_m / \sigma)}

    (Yeh et al. 2022, "Decoupled Contrastive Learning", Eq. 6 and Sec. 4.)

    Args:
        similarities: (N,) cosine similarities of the positive pairs.
        sigma: :math:`\sigma`, a finite number > 0.

    Returns:
        (N,) weights with mean 1, same dtype as ``similarities``, no gradient.

    Examples:
        >>> von_mises_fisher_weights(torch.zeros(4))  # equal similarities: all weights 1
        tensor([1., 1., 1., 1.])
        >>> w = von_mises_fisher_weights(torch.tensor([1.0, 0.0]), sigma=0.5)
        >>> bool(w[0] < 1 < w[1]), round(w.mean().item(), 6)
        (True, 1.0)
    """
    sigma = check_sigma(sigma)
    if similarities.ndim != 1:
        raise ValueError(f"similarities must have shape (N,), got {tuple(similarities.shape)}")
    similarities = similarities.detach()
    return 2 - similarities.shape[0] * torch.softmax(similarities / sigma, dim=0)  # (N,)
