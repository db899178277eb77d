r"""InfoNCE / NT-Xent and supervised contrastive losses, with an optional cross-rank gather.

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

Numerics: similarities, the log-sum-exp and the loss are computed in float32 (float64 when an
input is float64) with autocast disabled, whatever the input precision, so the losses are stable
under bf16/fp16 autocast and at temperatures as small as 1e-3.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive import distributed
from contrastive.losses.activations import check_temperature
from contrastive.losses.blocked import (
    BlockedContrastiveLosses,
    BlockSize,
    check_block_size,
    resolve_block_size,
)
from contrastive.losses.precision import (
    NORMALIZE_EPS,
    autocast_disabled,
    check_pair,
    compute_dtype,
)

__all__ = [
    "InfoNCELoss",
    "contrastive_loss",
    "info_nce",
    "multi_view_info_nce",
]


def _masked_logits(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    self_index: Tensor,
    temperature: float,
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
    temperature: float,
    block_size: BlockSize = "auto",
) -> tuple[Tensor, Tensor]:
    """Per-anchor SupCon L_out terms and whether each anchor has at least one positive.

    Shapes: anchors (A, D), candidates (C, D), anchor_labels (A,), candidate_labels (C,),
    self_index (A,). Returns ``(losses (A,), has_positive (A,) bool)``; the loss of an anchor
    without positives is its log-denominator alone and must be discarded by the caller.
    ``block_size`` picks the path (:func:`contrastive.losses.blocked.resolve_block_size`): the blocked one
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

    dtype = compute_dtype(anchors, candidates)
    rows = resolve_block_size(block_size, num_anchors, num_candidates, dtype.itemsize)
    with autocast_disabled(anchors.device):
        anchors = F.normalize(anchors.to(dtype), dim=1, eps=NORMALIZE_EPS)  # (A, D)
        candidates = F.normalize(candidates.to(dtype), dim=1, eps=NORMALIZE_EPS)  # (C, D)
        if rows is not None:
            losses, num_positives = BlockedContrastiveLosses.apply(
                anchors, candidates, anchor_labels, candidate_labels, self_index, temperature, rows
            )
            return losses, num_positives > 0
        # The self entry is set to a finite "minus infinity" (an anchor whose only candidate
        # is itself then gets a finite log-denominator and zero gradient, not -inf and NaN).
        masked_logits, positive_mask = _masked_logits(
            anchors, candidates, anchor_labels, candidate_labels, self_index, temperature
        )  # (A, C) each
        log_denominator = torch.logsumexp(masked_logits, dim=1)  # (A,)

        num_positives = positive_mask.sum(dim=1)  # (A,)
        positive_logit_sum = torch.where(positive_mask, masked_logits, 0.0).sum(dim=1)  # (A,)
        mean_positive_logit = positive_logit_sum / num_positives.clamp(min=1)  # (A,)
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
    temperature: float = 0.1,
    block_size: BlockSize = "auto",
) -> Tensor:
    r"""General contrastive loss of anchors against candidates (SupCon :math:`\mathcal{L}_{out}`).

    .. math::

        \mathcal{L} = \frac{1}{|V|} \sum_{i \in V} -\frac{1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne \mathrm{self}(i)} \exp(s_{ik} / T)}

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
        temperature: ``T``, a finite number > 0.
        block_size: ``"auto"``: the blocked path (exact, O(block x C) memory instead of
            O(A x C)) from 1024 x 1024 similarities up, where it is also the faster one; an
            int: always blocked, that many anchors at a time; ``None``: always dense.

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
    """
    temperature = check_temperature(temperature)
    losses, has_positive = _per_anchor_losses(
        anchors, candidates, anchor_labels, candidate_labels, self_index, temperature, block_size
    )
    return _mean_over_valid(losses, has_positive)


def _check_views(views: Tensor) -> None:
    if views.ndim != 3:
        raise ValueError(f"views must have shape (V, N, D), got {tuple(views.shape)}")


def multi_view_info_nce(
    views: Tensor,
    temperature: float = 0.1,
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
        temperature: ``T``, a finite number > 0.
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


def info_nce(
    z_a: Tensor, z_b: Tensor, temperature: float = 0.1, block_size: BlockSize = "auto"
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
        temperature: ``T``, a finite number > 0.

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


class InfoNCELoss(nn.Module):
    r"""NT-Xent / multi-view InfoNCE / SupCon loss, optionally contrasting against all ranks.

    - ``forward(z_a, z_b)``: two views (N, D) each, :func:`info_nce`.
    - ``forward_views(views, labels=None)``: ``V`` views (V, N, D),
      :func:`multi_view_info_nce` (SupCon when ``labels`` (N,) are given).

    Cross-rank negatives (``gather_distributed=True``, ``torch.distributed`` initialised and
    world size > 1): the local embeddings are the anchors; the candidates are the embeddings
    of **all** ranks, gathered with :func:`contrastive.distributed.all_gather_with_grad` so that
    gradients flow back to the rank that produced them; ``self_index`` is offset by this rank's
    position among the candidates. Instance ids are made globally unique by offsetting local
    sample indices by the global index of this rank's first sample; class labels are gathered as
    they are. **Unequal local batch sizes are supported**: the per-rank sizes are all-gathered
    first (one tiny extra collective per call). The number of views ``V`` must be the same on
    every rank, and every rank must call the loss (it runs collectives).

    The loss returned on rank ``r`` is
    :math:`R \cdot \sum_{i \in \mathrm{local}} \ell_i / |V_{\mathrm{global}}|`
    (``R`` = world size, :math:`V_{\mathrm{global}}` = anchors of all ranks that have a
    positive). With equal local batch sizes (and, for SupCon, when every anchor has a positive)
    this is simply the **mean over the local anchors**; in all cases the mean of the per-rank
    losses equals the single-process loss on the concatenated batch, and hence — because
    ``all_gather_with_grad`` sums cross-rank gradients and DDP averages parameter gradients —
    the DDP gradient equals the single-process gradient. Without an initialised process group,
    or with a world size of 1, the result is exactly the local loss.

    Args:
        temperature: ``T``, a finite number > 0 (SimCLR uses 0.1 to 0.5).
        gather_distributed: contrast against the embeddings of all ranks when distributed.
        block_size: ``"auto"``: the exact blocked path (O(block x candidates) memory instead
            of the whole similarity matrix) from 1024 x 1024 similarities up, where it is also
            faster; an int: always blocked, that many anchors per block; ``None``: dense.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0, or ``block_size`` is not
            ``"auto"``, ``None`` or an int >= 1.

    Shape:
        - ``forward``: ``z_a`` (N, D), ``z_b`` (N, D) -> scalar.
        - ``forward_views``: ``views`` (V, N, D), ``labels`` (N,) or None -> scalar.

    Examples:
        >>> criterion = InfoNCELoss(temperature=0.5)
        >>> z = torch.ones(4, 8)
        >>> round(criterion(z, z).item(), 4)  # log(7)
        1.9459
        >>> round(criterion.forward_views(torch.ones(2, 4, 8)).item(), 4)
        1.9459
        >>> InfoNCELoss(temperature=-0.1)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be a finite number > 0, got -0.1
    """

    def __init__(
        self,
        temperature: float = 0.1,
        gather_distributed: bool = False,
        block_size: BlockSize = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.block_size = check_block_size(block_size)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        check_pair(z_a, z_b)
        return self.forward_views(torch.stack([z_a, z_b]))  # (2, N, D)

    def forward_views(self, views: Tensor, labels: Tensor | None = None) -> Tensor:
        """Loss of ``V`` views (V, N, D); SupCon when ``labels`` (N,) are given."""
        if not (self.gather_distributed and distributed.world_size() > 1):
            return multi_view_info_nce(views, self.temperature, labels, self.block_size)
        return self._gathered_loss(views, labels)

    def _gathered_loss(self, views: Tensor, labels: Tensor | None) -> Tensor:
        _check_views(views)
        num_views, num_samples, dim = views.shape
        if labels is None and num_views < 2:
            raise ValueError(
                f"instance discrimination needs at least 2 views, got views of shape "
                f"{tuple(views.shape)}; pass labels for single-view SupCon"
            )
        if labels is not None and labels.shape != (num_samples,):
            raise ValueError(
                f"labels must have shape ({num_samples},) to match views "
                f"{tuple(views.shape)}, got {tuple(labels.shape)}"
            )
        samples_per_rank = distributed.all_gather_sizes(num_samples, views.device)
        first_sample = sum(samples_per_rank[: distributed.rank()])
        if labels is None:
            sample_labels = first_sample + torch.arange(num_samples, device=views.device)  # (N,)
        else:
            sample_labels = labels

        anchors = views.reshape(num_views * num_samples, dim)  # (V N, D)
        anchor_labels = sample_labels.repeat(num_views)  # (V N,)
        candidates_per_rank = [num_views * size for size in samples_per_rank]
        candidates = distributed.all_gather_with_grad(anchors, candidates_per_rank)  # (V N_all, D)
        candidate_labels = distributed.all_gather(anchor_labels, candidates_per_rank)  # (V N_all,)
        self_index = num_views * first_sample + torch.arange(
            num_views * num_samples, device=views.device
        )  # (V N,)

        losses, has_positive = _per_anchor_losses(
            anchors,
            candidates,
            anchor_labels,
            candidate_labels,
            self_index,
            self.temperature,
            self.block_size,
        )
        if labels is None:
            num_valid_global = losses.new_tensor(float(candidates.shape[0]))
        else:
            _, inverse, counts = torch.unique(
                candidate_labels, return_inverse=True, return_counts=True
            )
            num_valid_global = (counts[inverse] > 1).sum()
        local_sum = torch.where(has_positive, losses, 0.0).sum()
        return distributed.world_size() * local_sum / num_valid_global.clamp(min=1)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, gather_distributed={self.gather_distributed}, "
            f"block_size={self.block_size}"
        )
