r"""Metrics of embeddings: representation health, pair similarities, kNN accuracy (pure
torch, no Lightning).

- :func:`alignment` and :func:`uniformity`: Wang and Isola (2020), "Understanding
  Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere".
- :func:`effective_rank`: RankMe, Garrido et al. (2023), "RankMe: Assessing the Downstream
  Performance of Pretrained Self-Supervised Representations by Their Rank". A collapsing
  representation shows as a falling rank.
- :func:`similarity_stats`: mean cosine similarity of the positive and of the negative pairs
  of a two-view batch (what SimCLR logs as ``train/pos_sim`` and ``train/neg_sim``).
- :func:`knn_predict` and :func:`knn_top1`: the weighted kNN vote of Wu et al. (2018),
  "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", scored by the
  pretraining monitor (:class:`contrastive.callbacks.KNNMonitor`) and the kNN job.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.losses.precision import (
    NORMALIZE_EPS,
    autocast_disabled,
    check_pair,
    compute_dtype,
)

__all__ = [
    "alignment",
    "effective_rank",
    "knn_predict",
    "knn_top1",
    "similarity_stats",
    "uniformity",
]


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


@torch.no_grad()
def similarity_stats(z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
    r"""Mean cosine similarity of positive and of negative pairs of a two-view batch, for logging.

    With :math:`s` the cosine similarities of the ``2N`` embeddings ``[z_a; z_b]``:

    - ``"pos_sim"`` :math:`= \frac{1}{N} \sum_n s(z_{a,n}, z_{b,n})`;
    - ``"neg_sim"`` = mean of :math:`s_{ik}` over the ordered pairs ``i != k`` that are not
      the two views of one sample (the ``2N (2N - 2)`` negatives of :func:`contrastive.losses.info_nce`); NaN when
      ``N = 1`` (no negatives).

    Computed without gradient, in float32 (float64 for float64 inputs).

    Args:
        z_a: (N, D) embeddings of the first view.
        z_b: (N, D) embeddings of the second view.

    Returns:
        ``{"pos_sim": scalar, "neg_sim": scalar}``.

    Examples:
        >>> stats = similarity_stats(torch.eye(3), torch.eye(3))
        >>> {name: round(value.item(), 4) for name, value in stats.items()}
        {'pos_sim': 1.0, 'neg_sim': 0.0}
    """
    check_pair(z_a, z_b)
    num_samples = z_a.shape[0]
    dtype = compute_dtype(z_a, z_b)
    with autocast_disabled(z_a.device):
        embeddings = torch.cat([z_a, z_b]).to(dtype)  # (2N, D)
        embeddings = F.normalize(embeddings, dim=1, eps=NORMALIZE_EPS)
        similarities = embeddings @ embeddings.T  # (2N, 2N)
    indices = torch.arange(2 * num_samples, device=z_a.device)  # (2N,)
    partner = (indices + num_samples) % (2 * num_samples)  # (2N,)
    negative_mask = (indices[:, None] != indices[None, :]) & (
        partner[:, None] != indices[None, :]
    )  # (2N, 2N)
    positive_similarities = similarities[:num_samples, num_samples:].diagonal()  # (N,)
    return {
        "pos_sim": positive_similarities.mean(),
        "neg_sim": similarities[negative_mask].mean(),
    }


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a cosine-similarity, temperature-weighted kNN vote.

    For query ``q`` with neighbours ``n_1..n_k`` (highest cosine similarity ``s_j`` in the
    bank), ``score_c(q) = sum_j exp(s_j / temperature) * [label(n_j) = c]``.
    ``query`` (Q, D), ``bank`` (M, D), ``bank_labels`` (M,) -> scores (Q, num_classes).

    Examples:
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> labels = torch.tensor([0, 0, 1])
        >>> knn_predict(torch.tensor([[1.0, 0.05]]), bank, labels, 2, k=2).argmax(1).tolist()
        [0]
    """
    if temperature <= 0:
        raise ValueError(f"knn temperature must be > 0, got {temperature}")
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    scores = []
    for start in range(0, query.shape[0], chunk_size):
        chunk = F.normalize(query[start : start + chunk_size].float(), dim=1)
        similarity = chunk @ bank.T  # (q, M)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (q, k)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)  # (q, C)
        scores.append(votes)
    return torch.cat(scores)


def knn_top1(
    bank: Tensor,
    bank_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> tuple[Tensor, int]:
    """Top-1 accuracy of :func:`knn_predict` on ``test`` against ``bank``, and how many bank
    samples voted: those with a label ``< 0`` (unlabelled) cannot vote."""
    keep = bank_labels >= 0
    num_classes = int(max(bank_labels.max(), test_labels.max()).item()) + 1
    scores = knn_predict(test, bank[keep], bank_labels[keep], num_classes, k, temperature)
    return (scores.argmax(dim=1) == test_labels).float().mean(), int(keep.sum())
