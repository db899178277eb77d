r"""InfoNCE / NT-Xent, supervised and decoupled contrastive losses: the pure functions.

The module that validates their options and gathers across ranks is
:class:`contrastive.losses.InfoNCELoss` (:mod:`contrastive.losses.info_nce_loss`).

Everything is built on one core, :func:`contrastive_loss`: a set of *anchors* is scored against a
set of *candidates* by temperature-scaled cosine similarity; the positives of an anchor are the
candidates carrying its label, the anchor itself (if present among the candidates) is left out of
both the numerator and the denominator, and the loss of anchor ``i`` is the SupCon
:math:`\mathcal{L}_{out}` term (Khosla et al. 2020, "Supervised Contrastive Learning")

.. math::

    \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne \mathrm{self}(i)} \exp(s_{ik} / T)}

with :math:`s_{ik}` the cosine similarity of anchor ``i`` and candidate ``k``. With exactly one
positive per anchor (the other augmented view of the same image) it is the NT-Xent loss of
SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"), a form of InfoNCE (van den Oord et al. 2018).

Two options generalise it. ``decoupled=True`` takes the positives out of the denominator
(DCL, Yeh et al. 2022, "Decoupled Contrastive Learning"), and ``positive_weights`` ``w`` (A,)
multiply each anchor's positive term (DCLW's von Mises-Fisher weight,
:mod:`contrastive.losses.weighting`):

.. math::

    \ell_i = -\frac{w_i}{|P(i)|} \sum_{p \in P(i)} \frac{s_{ip}}{T}
        + \log \sum_{k \in D(i)} \exp(s_{ik} / T),
    \qquad D(i) = \begin{cases} \{k \ne \mathrm{self}(i)\} & \text{coupled (default)} \\
        \{k \notin P(i) \cup \{\mathrm{self}(i)\}\} & \text{decoupled} \end{cases}

which for :math:`w_i = 1` and the coupled denominator is the :math:`\mathcal{L}_{out}` term above.

Numerics: similarities, the log-sum-exp and the loss are computed in float32 (float64 when an
input is float64) with autocast disabled, whatever the input precision, so the losses are stable
under bf16/fp16 autocast and at temperatures as small as 1e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.losses.activations import check_loss_temperature
from contrastive.losses.blocked import (
    BlockedContrastiveLosses,
    BlockSize,
    resolve_block_size,
)
from contrastive.losses.precision import (
    NORMALIZE_EPS,
    autocast_disabled,
    check_pair,
    compute_dtype,
)

__all__ = [
    "contrastive_loss",
    "info_nce",
    "multi_view_info_nce",
    "supcon_loss",
]


def _masked_logits(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    self_index: Tensor,
    temperature: float | Tensor,
) -> tuple[Tensor, Tensor]:
    """Scaled similarities ``(A, C)`` of ``anchors`` to ``candidates`` with each anchor's self
    entry set to the dtype's lowest value, and the positive mask (same label, not self)."""
    logits = anchors @ candidates.T / temperature  # (A, C)
    columns = torch.arange(candidates.shape[0], device=anchors.device)
    self_mask = self_index[:, None] == columns[None, :]  # (A, C)
    positive_mask = (anchor_labels[:, None] == candidate_labels[None, :]) & ~self_mask
    return logits.masked_fill(self_mask, torch.finfo(logits.dtype).min), positive_mask


def _per_anchor_losses(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    self_index: Tensor,
    temperature: float | Tensor,
    block_size: BlockSize = "auto",
    decoupled: bool = False,
    positive_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-anchor SupCon L_out terms and whether each anchor has at least one positive.

    Shapes: anchors (A, D), candidates (C, D), anchor_labels (A,), candidate_labels (C,),
    self_index (A,), positive_weights (A,) or None. Returns ``(losses (A,), has_positive (A,)
    bool)``; the loss of an anchor without positives is its log-denominator alone and must be
    discarded by the caller. ``decoupled``: the positives leave the denominator (DCL; an
    anchor left with no candidate in it gets a log-denominator of 0); ``positive_weights``:
    detached constants multiplying each anchor's positive term (see the module docstring).
    ``temperature``: a float, or a 0-dim tensor (a learnt one) that both paths differentiate
    through, cast to the computation's dtype. ``block_size`` picks the path (:func:`contrastive.losses.blocked.resolve_block_size`): the blocked one
    (:class:`~contrastive.losses.blocked.BlockedContrastiveLosses`) gives the same values and
    gradients with O(block x C) memory instead of O(A x C).
    """
    if anchors.ndim != 2 or candidates.ndim != 2 or anchors.shape[1] != candidates.shape[1]:
        raise ValueError(
            "anchors and candidates must be 2-D with the same embedding size, got shapes "
            f"{tuple(anchors.shape)} and {tuple(candidates.shape)}"
        )
    num_anchors, num_candidates = anchors.shape[0], candidates.shape[0]
    if anchor_labels.shape != (num_anchors,) or self_index.shape != (num_anchors,):
        raise ValueError(
            f"anchor_labels and self_index must have shape ({num_anchors},) to match anchors, "
            f"got {tuple(anchor_labels.shape)} and {tuple(self_index.shape)}"
        )
    if candidate_labels.shape != (num_candidates,):
        raise ValueError(
            f"candidate_labels must have shape ({num_candidates},) to match candidates, "
            f"got {tuple(candidate_labels.shape)}"
        )
    if positive_weights is not None and positive_weights.shape != (num_anchors,):
        raise ValueError(
            f"positive_weights must be None or have shape ({num_anchors},) to match anchors, "
            f"got {tuple(positive_weights.shape)}"
        )

    dtype = compute_dtype(anchors, candidates)
    rows = resolve_block_size(block_size, num_anchors, num_candidates, dtype.itemsize)
    weights = None if positive_weights is None else positive_weights.detach().to(dtype)  # (A,)
    if isinstance(temperature, Tensor):
        temperature = temperature.to(dtype)  # () with its gradient
    with autocast_disabled(anchors.device):
        anchors = F.normalize(anchors.to(dtype), dim=1, eps=NORMALIZE_EPS)  # (A, D)
        candidates = F.normalize(candidates.to(dtype), dim=1, eps=NORMALIZE_EPS)  # (C, D)
        if rows is not None:
            losses, num_positives = BlockedContrastiveLosses.apply(
                anchors,
                candidates,
                anchor_labels,
                candidate_labels,
                self_index,
                temperature,
                rows,
                decoupled,
                weights,
            )
            return losses, num_positives > 0
        # The self entry is set to a finite "minus infinity" (an anchor whose only candidate
        # is itself then gets a finite log-denominator and zero gradient, not -inf and NaN).
        masked_logits, positive_mask = _masked_logits(
            anchors, candidates, anchor_labels, candidate_labels, self_index, temperature
        )  # (A, C) each
        num_positives = positive_mask.sum(dim=1)  # (A,)
        if decoupled:
            lowest = torch.finfo(masked_logits.dtype).min
            negative_logits = masked_logits.masked_fill(positive_mask, lowest)  # (A, C)
            log_denominator = torch.logsumexp(negative_logits, dim=1)  # (A,)
            has_self = (self_index >= 0) & (self_index < num_candidates)  # (A,)
            num_negatives = num_candidates - has_self.long() - num_positives  # (A,)
            log_denominator = torch.where(num_negatives > 0, log_denominator, 0.0)
        else:
            log_denominator = torch.logsumexp(masked_logits, dim=1)  # (A,)

        positive_logit_sum = torch.where(positive_mask, masked_logits, 0.0).sum(dim=1)  # (A,)
        mean_positive_logit = positive_logit_sum / num_positives.clamp(min=1)  # (A,)
        if weights is not None:
            mean_positive_logit = weights * mean_positive_logit
        losses = log_denominator - mean_positive_logit  # (A,)
    return losses, num_positives > 0


def _mean_over_valid(losses: Tensor, has_positive: Tensor) -> Tensor:
    """Mean of ``losses`` over anchors with a positive; ``0 * sum`` (zero grads) if none."""
    total = torch.where(has_positive, losses, 0.0).sum()
    return total / has_positive.sum().clamp(min=1)


def contrastive_loss(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    self_index: Tensor,
    temperature: float | Tensor = 0.1,
    block_size: BlockSize = "auto",
    decoupled: bool = False,
    positive_weights: Tensor | None = None,
) -> Tensor:
    r"""General contrastive loss of anchors against candidates (SupCon :math:`\mathcal{L}_{out}`).

    .. math::

        \mathcal{L} = \frac{1}{|V|} \sum_{i \in V} -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne \mathrm{self}(i)} \exp(s_{ik} / T)}

    and in general (``decoupled``, ``positive_weights`` :math:`w`)

    .. math::

        \mathcal{L} = \frac{1}{|V|} \sum_{i \in V} \Big(
            -\frac{w_i}{|P(i)|} \sum_{p \in P(i)} \frac{s_{ip}}{T}
            + \log \sum_{k \in D(i)} \exp(s_{ik} / T) \Big)

    with :math:`D(i) = \{k \ne \mathrm{self}(i)\}` (coupled, the default: the first formula
    when :math:`w = 1`) or :math:`D(i) = \{k \notin P(i) \cup \{\mathrm{self}(i)\}\}`
    (decoupled: Yeh et al. 2022, "Decoupled Contrastive Learning"); a decoupled anchor whose
    :math:`D(i)` is empty gets a log-sum-exp of 0 (finite, no gradient from it).

    where :math:`s_{ik} = \hat a_i \cdot \hat c_k` is the cosine similarity (both sides are
    L2-normalised **inside**, so pre-normalised inputs are fine too; a zero vector stays zero),
    :math:`P(i) = \{k \ne \mathrm{self}(i) : \mathrm{candidate\_labels}_k =
    \mathrm{anchor\_labels}_i\}` are the positives of anchor ``i`` and :math:`V` the anchors with
    at least one positive. Anchors without positives are **excluded from the mean**; if no
    anchor has one, the result is ``0`` with all-zero (but defined) gradients.
    (Khosla et al. 2020, "Supervised Contrastive Learning"; with one positive per anchor it is
    SimCLR's NT-Xent, Chen et al. 2020.)

    This is the form used across ranks: on rank ``r``, anchors are the local embeddings,
    candidates the embeddings gathered from all ranks and ``self_index = offset_r + arange(A)``.

    Args:
        anchors: (A, D) embeddings whose losses are averaged.
        candidates: (C, D) embeddings the anchors are contrasted with.
        anchor_labels: (A,) integer ids; equal ids mean "positive pair".
        candidate_labels: (C,) integer ids, same id space as ``anchor_labels``.
        self_index: (A,) long; column of each anchor itself in ``candidates``, excluded from
            numerator and denominator. An index outside ``[0, C)`` (e.g. ``-1``) excludes
            nothing, for anchors that are not among the candidates.
        temperature: ``T``, a finite number > 0, or a 0-dim floating-point tensor (e.g. a
            learnt temperature; its value is not checked): the loss is then differentiable
            in it, on both paths.
        block_size: ``"auto"``: the blocked path (exact, O(block x C) memory instead of
            O(A x C)) from 1024 x 1024 similarities up, where it is also the faster one; an
            int: always blocked, that many anchors at a time; ``None``: always dense.
        decoupled: drop the positives from the denominator (DCL).
        positive_weights: optional (A,) weights :math:`w_i` of the positive terms, used as
            constants (detached).

    Returns:
        Scalar loss, float32 (float64 if an input is float64) even for fp16/bf16 inputs.

    Raises:
        ValueError: on inconsistent shapes or a temperature that is not a finite number > 0.

    Examples:
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
        >>> labels = torch.tensor([0, 1, 0, 1])
        >>> loss = contrastive_loss(embeddings, embeddings, labels, labels, torch.arange(4), 0.5)
        >>> round(loss.item(), 4)
        0.2899
        >>> loss = contrastive_loss(
        ...     embeddings, embeddings, labels, labels, torch.arange(4), 0.5, decoupled=True
        ... )
        >>> round(loss.item(), 4)  # the positive no longer in the denominator: lower
        -1.0935
    """
    temperature = check_loss_temperature(temperature)
    losses, has_positive = _per_anchor_losses(
        anchors,
        candidates,
        anchor_labels,
        candidate_labels,
        self_index,
        temperature,
        block_size,
        decoupled,
        positive_weights,
    )
    return _mean_over_valid(losses, has_positive)


def _check_views(views: Tensor) -> None:
    if views.ndim != 3:
        raise ValueError(f"views must have shape (V, N, D), got {tuple(views.shape)}")


def multi_view_info_nce(
    views: Tensor,
    temperature: float | Tensor = 0.1,
    labels: Tensor | None = None,
    block_size: BlockSize = "auto",
) -> Tensor:
    r"""Contrastive loss over ``V`` augmented views of ``N`` samples: multi-view InfoNCE or SupCon.

    All ``V * N`` embeddings are anchors and candidates at once (self excluded), and
    :func:`contrastive_loss` is applied with

    - ``labels=None``: instance discrimination, positives of an embedding = the ``V - 1`` other
      views of the same sample. For ``V = 2`` this is exactly :func:`info_nce`.
    - ``labels`` (N,): SupCon (Khosla et al. 2020), positives = every other embedding (any view)
      of a sample with the same class. Embeddings whose class has no other member are excluded
      from the mean (see :func:`contrastive_loss`).

    .. math::

        \mathcal{L} = \frac{1}{VN} \sum_{i=1}^{VN} -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne i} \exp(s_{ik} / T)}

    Args:
        views: (V, N, D) embeddings, ``views[v, n]`` = view ``v`` of sample ``n``; ``V >= 2``
            without labels, ``V >= 1`` with labels.
        temperature: ``T``, a finite number > 0 or a 0-dim tensor (:func:`contrastive_loss`).
        labels: optional (N,) integer class ids.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs).

    Raises:
        ValueError: on bad shapes, ``V < 2`` without labels, or a bad temperature.

    Examples:
        >>> views = torch.ones(3, 4, 8)  # 3 identical views: all similarities are 1
        >>> round(multi_view_info_nce(views).item(), 4)  # log(3N - 1) = log(11)
        2.3979
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> multi_view_info_nce(torch.randn(2, 4, 8), labels=labels).shape
        torch.Size([])
    """
    _check_views(views)
    num_views, num_samples, dim = views.shape
    if labels is None:
        if num_views < 2:
            raise ValueError(
                f"instance discrimination needs at least 2 views, got views of shape "
                f"{tuple(views.shape)}; pass labels for single-view SupCon"
            )
        sample_labels = torch.arange(num_samples, device=views.device)  # (N,)
    else:
        if labels.shape != (num_samples,):
            raise ValueError(
                f"labels must have shape ({num_samples},) to match views "
                f"{tuple(views.shape)}, got {tuple(labels.shape)}"
            )
        sample_labels = labels
    embeddings = views.reshape(num_views * num_samples, dim)  # (V N, D), view-major
    embedding_labels = sample_labels.repeat(num_views)  # (V N,)
    self_index = torch.arange(num_views * num_samples, device=views.device)  # (V N,)
    return contrastive_loss(
        embeddings,
        embeddings,
        embedding_labels,
        embedding_labels,
        self_index,
        temperature,
        block_size,
    )


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    temperature: float | Tensor = 0.1,
    block_size: BlockSize = "auto",
) -> Tensor:
    r"""Supervised contrastive loss (SupCon :math:`\mathcal{L}_{out}`) of one set of embeddings.

    Every embedding is an anchor; its positives :math:`P(i)` are the other embeddings with its
    label, its denominator runs over all embeddings but itself:

    .. math::

        \mathcal{L} = \frac{1}{|V|} \sum_{i \in V} -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne i} \exp(s_{ik} / T)}

    with :math:`s_{ik}` the cosine similarity and :math:`V` the anchors with at least one
    positive (Khosla et al. 2020, "Supervised Contrastive Learning", Eq. 2). It is
    :func:`contrastive_loss` ``(e, e, labels, labels, arange(M), T)``; for several views,
    flatten them into ``embeddings`` (or use :func:`multi_view_info_nce` with labels).

    ``pytorch_metric_learning.losses.SupConLoss(temperature=T)`` gives the same value whenever
    the batch holds at least one pair of different labels: it averages the per-anchor losses
    that are ``> 0`` (its ``AvgNonZeroReducer``), which are exactly the anchors with a
    positive unless a loss rounds to 0; with a single label in the whole batch it returns 0.

    Args:
        embeddings: (M, D) embeddings, L2-normalised inside.
        labels: (M,) integer class ids.
        temperature: ``T``, a finite number > 0 or a 0-dim tensor (:func:`contrastive_loss`).
        block_size: as in :func:`contrastive_loss`.

    Returns:
        Scalar loss, float32 (float64 for float64 inputs); 0 (zero gradients) if no label
        occurs twice.

    Raises:
        ValueError: if ``embeddings`` is not (M, D) with M >= 1, ``labels`` is not (M,), or on a
            bad temperature.

    Examples:
        >>> embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
        >>> round(supcon_loss(embeddings, torch.tensor([0, 1, 0, 1]), 0.5).item(), 4)
        0.2899
        >>> supcon_loss(embeddings, torch.arange(4)).item()  # no positives at all
        0.0
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"embeddings must be a non-empty (M, D) tensor, got shape {tuple(embeddings.shape)}"
        )
    num_embeddings = embeddings.shape[0]
    if labels.shape != (num_embeddings,):
        raise ValueError(
            f"labels must have shape ({num_embeddings},) to match embeddings "
            f"{tuple(embeddings.shape)}, got {tuple(labels.shape)}"
        )
    self_index = torch.arange(num_embeddings, device=embeddings.device)  # (M,)
    return contrastive_loss(
        embeddings, embeddings, labels, labels, self_index, temperature, block_size
    )


def info_nce(
    z_a: Tensor, z_b: Tensor, temperature: float | Tensor = 0.1, block_size: BlockSize = "auto"
) -> Tensor:
    r"""SimCLR's NT-Xent loss (normalised temperature-scaled cross entropy) of two views.

    The ``2N`` embeddings ``[z_a; z_b]`` are L2-normalised; each is an anchor whose positive is
    the other view of the same sample and whose ``2N - 2`` negatives are all the other
    embeddings (itself excluded):

    .. math::

        \mathcal{L} = \frac{1}{2N} \sum_{i=1}^{2N}
            -\log \frac{\exp(s_{i,p(i)} / T)}{\sum_{k \ne i} \exp(s_{ik} / T)},
        \qquad s_{ik} = \frac{z_i \cdot z_k}{\lVert z_i \rVert \lVert z_k \rVert}

    (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations".) It is symmetric in ``(z_a, z_b)``, invariant to rescaling either input,
    and equal to ``log(2N - 1)`` when all embeddings are collinear. Zero vectors give a finite
    loss (their similarities are 0).

    Args:
        z_a: (N, D) embeddings of the first view.
        z_b: (N, D) embeddings of the second view; row ``n`` pairs with ``z_a[n]``.
        temperature: ``T``, a finite number > 0 or a 0-dim tensor (:func:`contrastive_loss`).

    Returns:
        Scalar loss, float32 (float64 for float64 inputs), also for fp16/bf16 inputs.

    Raises:
        ValueError: if the shapes differ or are not (N, D) with N >= 1, or on a bad temperature.

    Examples:
        >>> z = torch.ones(4, 8)  # collinear: loss = log(2N - 1) = log(7)
        >>> round(info_nce(z, z).item(), 4)
        1.9459
        >>> z_a = torch.eye(3)
        >>> round(info_nce(z_a, z_a, temperature=0.1).item(), 4)  # aligned, orthogonal negatives
        0.0002
    """
    check_pair(z_a, z_b)
    return multi_view_info_nce(torch.stack([z_a, z_b]), temperature, block_size=block_size)
