r"""Representation-health metrics of embeddings (pure torch, no Lightning).

- :func:`alignment` and :func:`uniformity`: Wang and Isola (2020), "Understanding
  Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere".
- :func:`effective_rank`: RankMe, Garrido et al. (2023), "RankMe: Assessing the Downstream
  Performance of Pretrained Self-Supervised Representations by Their Rank". A collapsing
  representation shows as a falling rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["alignment", "effective_rank", "uniformity"]


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> Tensor:
    r"""Mean distance between the two views of each sample, on the unit sphere.

    .. math::

        \mathcal{L}_\text{align} = \frac{1}{N} \sum_{i=1}^{N}
            \lVert \hat{z}^{(1)}_i - \hat{z}^{(2)}_i \rVert_2^{\alpha},
        \qquad \hat{z} = z / \lVert z \rVert

    Lower is better (0: views map to the same point). ``z1``, ``z2``: (N, D).

    Examples:
        >>> import torch
        >>> round(alignment(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])).item(), 4)
        2.0
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"expected two (N, D) tensors, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    distance = (F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)).norm(dim=1)
    return distance.pow(alpha).mean()


def uniformity(z: Tensor, t: float = 2.0) -> Tensor:
    r"""How evenly embeddings spread over the unit sphere.

    .. math::

        \mathcal{L}_\text{uniform} = \log \frac{2}{N(N-1)} \sum_{i<j}
            e^{-t \lVert \hat{z}_i - \hat{z}_j \rVert_2^2}

    Lower is better (more uniform); all embeddings equal give 0. ``z``: (N, D), N >= 2.

    Examples:
        >>> import torch
        >>> uniformity(torch.tensor([[1.0, 0.0], [2.0, 0.0]])).item()
        0.0
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"expected an (N, D) tensor with N >= 2, got {tuple(z.shape)}")
    squared = torch.pdist(F.normalize(z.float(), dim=1)).pow(2)  # (N(N-1)/2,)
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())


def effective_rank(z: Tensor, eps: float = 1e-7) -> Tensor:
    r"""RankMe: the exponential of the entropy of the normalised singular values.

    .. math::

        p_k = \frac{\sigma_k(Z)}{\lVert \sigma(Z) \rVert_1} + \epsilon, \qquad
        \operatorname{RankMe}(Z) = \exp\Big(-\sum_{k=1}^{\min(N, D)} p_k \log p_k\Big)

    Between 1 (all embeddings on one line) and ``min(N, D)`` (all singular values equal).
    ``z``: (N, D) embeddings, not centred (as in the paper).

    Examples:
        >>> import torch
        >>> round(effective_rank(torch.eye(4)).item(), 3)
        4.0
    """
    if z.ndim != 2:
        raise ValueError(f"expected an (N, D) tensor, got {tuple(z.shape)}")
    singular = torch.linalg.svdvals(z.float())
    p = singular / singular.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return torch.exp(-(p * p.log()).sum())
