r"""Decoupled contrastive loss (DCL) and its von Mises-Fisher weighted form (DCLW).

Yeh et al. 2022, "Decoupled Contrastive Learning" (ECCV; arXiv 2110.06848): the positive pair is
taken out of the InfoNCE denominator, which removes the negative-positive coupling that makes
NT-Xent need large batches. Built on :func:`contrastive.losses.contrastive_loss` with
``decoupled=True``; see :func:`dcl_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastive.losses.blocked import BlockSize
from contrastive.losses.info_nce import contrastive_loss
from contrastive.losses.precision import check_pair
from contrastive.losses.weighting import (
    check_sigma,
    check_weighting,
    positive_cosine_similarities,
    von_mises_fisher_weights,
)

__all__ = ["dcl_loss"]


def dcl_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.1,
    weighting: str | None = None,
    sigma: float = 0.5,
    block_size: BlockSize = "auto",
) -> Tensor:
    r"""Decoupled contrastive loss of two views, symmetrised: DCL, or DCLW with ``"vmf"``.

    The ``2N`` embeddings ``[z_a; z_b]`` are L2-normalised; embedding ``i`` has the other view
    of its sample as positive ``p(i)`` and the other ``2N - 2`` embeddings as negatives, and the
    positive is **not** in the denominator:

    .. math::

        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N} \Big( -w_{n(i)} \frac{s_{i,p(i)}}{T}
            + \log \sum_{k \notin \{i, p(i)\}} \exp(s_{ik} / T) \Big)

    with :math:`s_{ik}` the cosine similarity, :math:`n(i)` the sample of embedding ``i`` and
    :math:`w_n = 1` (DCL), or for ``weighting="vmf"`` (DCLW)

    .. math::

        w_n = 2 - N \, \mathrm{softmax}_n\big(\langle \hat z_{a,n}, \hat z_{b,n} \rangle
            / \sigma\big)

    (detached), the same for both directions of pair ``n``. (Yeh et al. 2022, "Decoupled
    Contrastive Learning", Eq. 6.) This is exactly lightly's ``DCLLoss(temperature)`` and
    ``DCLWLoss(temperature, sigma)``: lightly returns ``0.5 * (loss0 + loss1)``, the mean of the
    two directions' means over ``N``, i.e. the mean over the ``2N`` anchors above, and its
    ``negative_mises_fisher_weights`` is :math:`w_n` on the normalised views. One difference:
    with ``N = 1`` there are no negatives; lightly's log-sum-exp over nothing is ``-inf``, here
    it is taken as 0 (finite: the loss is then :math:`-w\, s_{ab} / T`).

    Args:
        z_a: (N, D) embeddings of the first view.
        z_b: (N, D) embeddings of the second view; row ``n`` pairs with ``z_a[n]``.
        temperature: ``T``, a finite number > 0 (the DCL paper and lightly use 0.1).
        weighting: ``None`` (DCL) or ``"vmf"`` (DCLW).
        sigma: :math:`\sigma` of the vMF weight, a finite number > 0 (0.5 in the paper).
        block_size: as in :func:`contrastive.losses.contrastive_loss`.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs), also for fp16/bf16 inputs. Unlike
        NT-Xent it can be negative.

    Raises:
        ValueError: if the shapes differ or are not (N, D) with N >= 1, ``weighting`` is not
            ``None`` or ``"vmf"``, or ``temperature`` or ``sigma`` is not a finite number > 0.

    Examples:
        >>> z = torch.ones(4, 8)  # all similarities 1: -1/T + log((2N - 2) e^{1/T}) = log(6)
        >>> round(dcl_loss(z, z).item(), 4)
        1.7918
        >>> z_a = torch.eye(3)
        >>> round(dcl_loss(z_a, z_a).item(), 4)  # aligned, orthogonal negatives: -10 + log(4)
        -8.6137
        >>> round(dcl_loss(z_a, z_a, weighting="vmf").item(), 4)  # equal similarities: w = 1
        -8.6137
    """
    check_pair(z_a, z_b)
    weighting = check_weighting(weighting)
    sigma = check_sigma(sigma)
    num_samples = z_a.shape[0]
    embeddings = torch.cat([z_a, z_b])  # (2N, D)
    labels = torch.arange(num_samples, device=z_a.device).repeat(2)  # (2N,)
    self_index = torch.arange(2 * num_samples, device=z_a.device)  # (2N,)
    weights = None
    if weighting == "vmf":
        pair_weights = von_mises_fisher_weights(positive_cosine_similarities(z_a, z_b), sigma)
        weights = pair_weights.repeat(2)  # (2N,): the same weight for both directions
    return contrastive_loss(
        embeddings,
        embeddings,
        labels,
        labels,
        self_index,
        temperature,
        block_size,
        decoupled=True,
        positive_weights=weights,
    )
