r"""MoCo's InfoNCE: queries against their momentum keys and a queue of negatives.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning" (MoCo);
Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning" (MoCo v2). The keys
come from a momentum encoder and the queue holds earlier batches' keys: both are constants for
autograd. Keeping and updating the queue is the method's job; see :func:`moco_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.losses.activations import check_loss_temperature
from contrastive.losses.precision import (
    NORMALIZE_EPS,
    autocast_disabled,
    compute_dtype,
)

__all__ = ["moco_loss"]


def moco_loss(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float | Tensor = 0.2,
    decoupled: bool = False,
) -> Tensor:
    r"""MoCo's InfoNCE of queries against their keys (positives) and a queue (negatives).

    With :math:`q_n, k_n, u_j` the L2-normalised query, key and queue entries:

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_{n=1}^{N}
            -\log \frac{\exp(q_n \cdot k_n / T)}
            {\exp(q_n \cdot k_n / T) + \sum_{j=1}^{K} \exp(q_n \cdot u_j / T)}

    and with ``decoupled=True`` (DCL, Yeh et al. 2022) the positive leaves the denominator:
    :math:`\ell_n = -q_n \cdot k_n / T + \log \sum_j \exp(q_n \cdot u_j / T)`. The other keys
    of the batch are **not** negatives (as in MoCo: :math:`\ell_{pos}` is (N, 1), and the
    queue alone gives :math:`\ell_{neg}` (N, K)). (He et al. 2020, Eq. 1 and Algorithm 1;
    Chen et al. 2020, MoCo v2, ``T = 0.2``.) ``keys`` and ``queue`` are detached inside:
    gradients reach ``queries`` only. This is lightly's ``NTXentLoss(temperature,
    memory_bank_size=(K, D))`` on a bank holding the normalised queue (its loss before the
    bank update; lightly has no decoupled form of it).

    An empty queue (``K = 0``) is allowed: the loss is then 0 (one candidate, the positive), and
    for ``decoupled`` the log-sum-exp over no negatives is taken as 0, so the loss is
    :math:`-\frac{1}{N} \sum_n q_n \cdot k_n / T` (finite).

    Computed in float32 (float64 if an input is float64) with autocast off, whatever the input
    precision; zero vectors normalise to zero (similarity 0) instead of NaN.

    Args:
        queries: (N, D) query embeddings (with gradient).
        keys: (N, D) key embeddings; row ``n`` is the positive of ``queries[n]``.
        queue: (K, D) negatives, K >= 0.
        temperature: ``T``, a finite number > 0 (MoCo v1: 0.07, MoCo v2: 0.2), or a 0-dim
            floating-point tensor (a learnt temperature, its value unchecked; cast to the
            computation's dtype): the loss is then differentiable in it.
        decoupled: drop the positive from the denominator.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: if ``queries`` and ``keys`` are not (N, D) of one shape with N >= 1, if
            ``queue`` is not (K, D) with their D, or on a bad temperature.

    Examples:
        >>> q = torch.eye(2)
        >>> moco_loss(q, q, torch.zeros(0, 2)).item()  # empty queue
        0.0
        >>> round(moco_loss(q, q, torch.tensor([[0.0, 1.0]]), temperature=1.0).item(), 4)
        0.5032
        >>> round(moco_loss(q, q, torch.tensor([[0.0, 1.0]]), 1.0, decoupled=True).item(), 4)
        -0.5
    """
    temperature = check_loss_temperature(temperature)
    if queries.ndim != 2 or queries.shape != keys.shape or queries.shape[0] == 0:
        raise ValueError(
            "queries and keys must be non-empty (N, D) tensors of the same shape, got "
            f"{tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if queue.ndim != 2 or queue.shape[1] != queries.shape[1]:
        raise ValueError(
            f"queue must be a (K, {queries.shape[1]}) tensor (K >= 0) to match the queries' "
            f"embedding size, got shape {tuple(queue.shape)}"
        )
    if not isinstance(decoupled, bool):
        raise ValueError(f"decoupled must be true or false, got {decoupled!r}")

    dtype = compute_dtype(queries, keys, queue)
    if isinstance(temperature, Tensor):
        temperature = temperature.to(dtype)  # () with its gradient
    with autocast_disabled(queries.device):
        queries = F.normalize(queries.to(dtype), dim=1, eps=NORMALIZE_EPS)  # (N, D)
        keys = F.normalize(keys.detach().to(dtype), dim=1, eps=NORMALIZE_EPS)  # (N, D)
        queue = F.normalize(queue.detach().to(dtype), dim=1, eps=NORMALIZE_EPS)  # (K, D)
        positive_logits = (queries * keys).sum(dim=1) / temperature  # (N,)
        negative_logits = queries @ queue.T / temperature  # (N, K)
        if decoupled:
            if queue.shape[0] == 0:  # no negatives: an empty log-sum-exp, taken as 0
                log_denominator = torch.zeros_like(positive_logits)
            else:
                log_denominator = torch.logsumexp(negative_logits, dim=1)  # (N,)
        else:
            logits = torch.cat([positive_logits[:, None], negative_logits], dim=1)  # (N, 1 + K)
            log_denominator = torch.logsumexp(logits, dim=1)  # (N,)
        return (log_denominator - positive_logits).mean()
