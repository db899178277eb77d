r"""The :class:`InfoNCELoss` module: NT-Xent / multi-view InfoNCE / SupCon / DCL(W) with
validated options, an optional cross-rank gather, and :meth:`InfoNCELoss.forward_pairs` for
paired sets (MoCo v3, NNCLR). The maths lives in :mod:`contrastive.losses.info_nce`
(:func:`~contrastive.losses.info_nce.contrastive_loss`, the core every form reduces to).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from contrastive import distributed
from contrastive.losses.activations import check_temperature
from contrastive.losses.blocked import BlockSize, check_block_size
from contrastive.losses.info_nce import _check_views, _per_anchor_losses, multi_view_info_nce
from contrastive.losses.precision import check_pair
from contrastive.losses.weighting import (
    check_sigma,
    check_weighting,
    positive_cosine_similarities,
    von_mises_fisher_weights,
)

__all__ = ["InfoNCELoss"]


def _layout(num_samples: int, device: torch.device, gather: bool) -> tuple[list[int], int]:
    """Every rank's number of samples and the global index of this rank's first (one
    collective when ``gather``; this process alone otherwise)."""
    if not gather:
        return [num_samples], 0
    samples_per_rank = distributed.all_gather_sizes(num_samples, device)
    return samples_per_rank, sum(samples_per_rank[: distributed.rank()])


class InfoNCELoss(nn.Module):
    r"""NT-Xent / multi-view InfoNCE / SupCon / DCL(W) loss, optionally contrasting against all ranks.

    - ``forward(z_a, z_b)``: two views (N, D) each, :func:`info_nce`.
    - ``forward_views(views, labels=None)``: ``V`` views (V, N, D),
      :func:`multi_view_info_nce` (SupCon when ``labels`` (N,) are given).
    - ``forward_pairs(anchors, candidates)``: one-directional InfoNCE of paired sets (N, D)
      each: the positive of anchor ``n`` is candidate ``n``, its negatives all other
      candidates (of all ranks when gathering); the anchors are not among the candidates.
      MoCo v3 (anchors = queries, candidates = momentum keys) and NNCLR (anchors = nearest
      neighbours, candidates = predictions) call it once per direction.

    ``decoupled=True`` takes the positives out of the denominators (DCL, Yeh et al. 2022,
    "Decoupled Contrastive Learning"; see :func:`contrastive_loss`), in every form.
    ``weighting="vmf"`` multiplies the positive term of pair ``n`` by DCLW's
    :math:`w_n = 2 - N\, \mathrm{softmax}_n(\cos(z_{a,n}, z_{b,n}) / \sigma)`
    (:func:`contrastive.losses.weighting.von_mises_fisher_weights`, the same weight for both
    directions of a pair); it is defined for one positive per anchor only: ``forward``,
    ``forward_views`` with 2 views and no labels, and ``forward_pairs`` (pair ``n`` = anchor
    ``n`` and candidate ``n``). ``decoupled=True, weighting="vmf"`` is DCLW; on one process
    ``forward`` then equals lightly's ``DCLWLoss(temperature, sigma)`` (and
    ``decoupled=True`` alone ``DCLLoss(temperature)``), see :func:`contrastive.losses.dcl_loss`.

    Cross-rank negatives (``gather_distributed=True``, ``torch.distributed`` initialised and
    world size > 1): the local embeddings are the anchors; the candidates are the embeddings
    of **all** ranks, gathered with :func:`contrastive.distributed.all_gather_with_grad` so that
    gradients flow back to the rank that produced them; ``self_index`` is offset by this rank's
    position among the candidates. Instance ids are made globally unique by offsetting local
    sample indices by the global index of this rank's first sample; class labels are gathered as
    they are. **Unequal local batch sizes are supported**: the per-rank sizes are all-gathered
    first (one tiny extra collective per call). The number of views ``V`` must be the same on
    every rank, and every rank must call the loss (it runs collectives). The vMF softmax runs
    over the **global** batch's positive similarities (gathered, without gradient), with
    ``N`` the global batch size, so that ``R`` ranks equal one process on the concatenated
    batch. (lightly's ``DCLWLoss(gather_distributed=True)`` instead weighs each rank's pairs
    by a softmax over its local batch, ``N`` = the local batch size: its DDP loss depends on
    how the batch is split.)

    The loss returned on rank ``r`` is
    :math:`R \cdot \sum_{i \in \mathrm{local}} \ell_i / |V_{\mathrm{global}}|`
    (``R`` = world size, :math:`V_{\mathrm{global}}` = anchors of all ranks that have a
    positive). With equal local batch sizes (and, for SupCon, when every anchor has a positive)
    this is simply the **mean over the local anchors**; in all cases the mean of the per-rank
    losses equals the single-process loss on the concatenated batch, and hence — because
    ``all_gather_with_grad`` sums cross-rank gradients and DDP averages parameter gradients —
    the DDP gradient equals the single-process gradient. Without an initialised process group,
    or with a world size of 1, the result is exactly the local loss.

    ``learnable_temperature=True`` learns ``T`` as CLIP does (Radford et al. 2021, "Learning
    Transferable Visual Models From Natural Language Supervision"): the module holds a
    parameter ``log_temperature`` (0-dim, in ``state_dict`` and checkpoints), initialised to
    ``log(temperature)``, and every form uses

    .. math::

        T = \max(\exp(\mathrm{log\_temperature}), \mathrm{min\_temperature}),

    so ``T >= min_temperature``; while the clamp is active the gradient with respect to
    ``log_temperature`` is 0 (the parameter no longer moves from the loss alone). Both the
    dense and the blocked paths return ``dL/dT`` (:mod:`contrastive.losses.blocked`). The
    methods' optimiser trains it with the other parameters, without weight decay
    (:func:`contrastive.optim.param_groups`: a 0-dim parameter is bias-like). Under DDP it
    is an ordinary parameter: DDP averages its gradient over the ranks, and since each rank's
    loss depends on ``T`` directly (the gathered candidates do not depend on it) and the mean
    of the per-rank losses is the single-process loss, the averaged gradient is the
    single-process ``dL/dT``. :attr:`temperature` is the current value (for logging:
    detached); :meth:`current_temperature` is the differentiable one.

    Args:
        temperature: ``T``, a finite number > 0 (SimCLR uses 0.1 to 0.5); with
            ``learnable_temperature``, its initial value.
        gather_distributed: contrast against the embeddings of all ranks when distributed.
        block_size: ``"auto"``: the exact blocked path (O(block x candidates) memory instead
            of the whole similarity matrix) from 1024 x 1024 similarities up, where it is also
            faster; an int: always blocked, that many anchors per block; ``None``: dense.
        decoupled: drop the positives from the denominators (DCL).
        weighting: ``None`` or ``"vmf"`` (DCLW's von Mises-Fisher weight of the positives).
        sigma: :math:`\sigma` of the vMF weight, a finite number > 0 (DCLW uses 0.5).
        learnable_temperature: learn ``T`` (a parameter ``log_temperature``, see above).
        min_temperature: the lower clamp of a learnt ``T``, a finite number > 0 (CLIP's
            0.01); unused when ``T`` is fixed.

    Raises:
        ValueError: if ``temperature``, ``sigma`` or ``min_temperature`` is not a finite
            number > 0, ``block_size`` is not ``"auto"``, ``None`` or an int >= 1,
            ``decoupled`` or ``learnable_temperature`` is not a bool, ``weighting`` not
            ``None`` or ``"vmf"``, or a learnable ``temperature`` starts below
            ``min_temperature``; at call time, if ``weighting="vmf"`` is asked of anything
            but two views without labels.

    Shape:
        - ``forward``: ``z_a`` (N, D), ``z_b`` (N, D) -> scalar.
        - ``forward_views``: ``views`` (V, N, D), ``labels`` (N,) or None -> scalar.
        - ``forward_pairs``: ``anchors`` (N, D), ``candidates`` (N, D) -> scalar.

    Examples:
        >>> criterion = InfoNCELoss(temperature=0.5)
        >>> z = torch.ones(4, 8)
        >>> round(criterion(z, z).item(), 4)  # log(7)
        1.9459
        >>> round(criterion.forward_views(torch.ones(2, 4, 8)).item(), 4)
        1.9459
        >>> round(criterion.forward_pairs(z, z).item(), 4)  # log(N) = log(4)
        1.3863
        >>> dcl = InfoNCELoss(temperature=0.5, decoupled=True)
        >>> round(dcl(z, z).item(), 4)  # -1 / T + log((2N - 2) exp(1 / T)) = log(6)
        1.7918
        >>> InfoNCELoss(temperature=-0.1)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be a finite number > 0, got -0.1
        >>> learnt = InfoNCELoss(temperature=0.07, learnable_temperature=True)
        >>> list(learnt.state_dict())
        ['log_temperature']
        >>> round(learnt.temperature.item(), 6)
        0.07
    """

    log_temperature: nn.Parameter | None

    def __init__(
        self,
        temperature: float = 0.1,
        gather_distributed: bool = False,
        block_size: BlockSize = "auto",
        decoupled: bool = False,
        weighting: str | None = None,
        sigma: float = 0.5,
        learnable_temperature: bool = False,
        min_temperature: float = 0.01,
    ) -> None:
        super().__init__()
        self.initial_temperature = check_temperature(temperature)
        self.min_temperature = check_temperature(min_temperature, "min_temperature")
        if not isinstance(learnable_temperature, bool):
            raise ValueError(
                f"learnable_temperature must be true or false, got {learnable_temperature!r}"
            )
        self.learnable_temperature = learnable_temperature
        if learnable_temperature and self.initial_temperature < self.min_temperature:
            raise ValueError(
                f"temperature must be >= min_temperature ({self.min_temperature}) when it is "
                f"learnt (the learnt value is clamped to it), got temperature "
                f"{self.initial_temperature}; lower min_temperature or raise temperature"
            )
        self.log_temperature = (
            nn.Parameter(torch.tensor(math.log(self.initial_temperature)))
            if learnable_temperature
            else None
        )
        self.gather_distributed = bool(gather_distributed)
        self.block_size = check_block_size(block_size)
        if not isinstance(decoupled, bool):
            raise ValueError(f"decoupled must be true or false, got {decoupled!r}")
        self.decoupled = decoupled
        self.weighting = check_weighting(weighting)
        self.sigma = check_sigma(sigma)

    @property
    def temperature(self) -> float | Tensor:
        """The temperature now: the configured float, or the learnt ``T`` (a detached 0-dim
        tensor, read without a device synchronisation), e.g. for ``train/temperature``."""
        current = self.current_temperature()
        return current.detach() if isinstance(current, Tensor) else current

    def current_temperature(self) -> float | Tensor:
        """The ``T`` every form uses: the configured float, or (learnt)
        ``exp(log_temperature).clamp(min=min_temperature)``, 0-dim, with its gradient."""
        if self.log_temperature is None:
            return self.initial_temperature
        return self.log_temperature.exp().clamp(min=self.min_temperature)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        check_pair(z_a, z_b)
        return self.forward_views(torch.stack([z_a, z_b]))  # (2, N, D)

    def forward_views(self, views: Tensor, labels: Tensor | None = None) -> Tensor:
        """Loss of ``V`` views (V, N, D); SupCon when ``labels`` (N,) are given."""
        _check_views(views)
        if self.weighting is not None and (labels is not None or views.shape[0] != 2):
            labelled = "with labels" if labels is not None else "without labels"
            raise ValueError(
                f"weighting={self.weighting!r} needs one positive per anchor: 2 views and no "
                f"labels, got views of shape {tuple(views.shape)} {labelled}"
            )
        gather = self.gather_distributed and distributed.world_size() > 1
        if not gather and not self.decoupled and self.weighting is None:
            return multi_view_info_nce(views, self.current_temperature(), labels, self.block_size)
        return self._gathered_loss(views, labels, gather)

    def forward_pairs(self, anchors: Tensor, candidates: Tensor) -> Tensor:
        r"""One-directional InfoNCE: anchor ``n``'s positive is candidate ``n``.

        .. math::

            \mathcal{L} = \frac{1}{N} \sum_{n=1}^{N} \Big( -w_n \frac{s_{nn}}{T}
                + \log \sum_{m \in D(n)} \exp(s_{nm} / T) \Big),
            \qquad s_{nm} = \cos(\mathrm{anchor}_n, \mathrm{candidate}_m)

        with :math:`D(n)` all candidates (all ``N_global`` of all ranks when gathering), or
        all but candidate ``n`` when ``decoupled``, and :math:`w_n = 1` unless
        ``weighting="vmf"`` (:math:`s_{nn}` softmaxed over the global batch). Anchors are not
        candidates (``self_index = -1``); with gathering, only the candidates are gathered
        (with gradient), and the returned loss is scaled as in ``forward_views``: the mean of
        the per-rank losses is the single-process loss on the concatenated batch. (He et al.
        2020 / Chen et al. 2021, "An Empirical Study of Training Self-Supervised Vision
        Transformers", MoCo v3; Dwibedi et al. 2021, NNCLR.)

        Args:
            anchors: (N, D) local anchors (queries, or nearest neighbours without gradient).
            candidates: (N, D) local candidates; row ``n`` is the positive of ``anchors[n]``.

        Returns:
            Scalar loss, float32 (float64 for float64 inputs).

        Raises:
            ValueError: if the shapes differ or are not (N, D) with N >= 1.

        Examples:
            >>> criterion = InfoNCELoss(temperature=0.1)
            >>> round(criterion.forward_pairs(torch.eye(3), torch.eye(3)).item(), 4)
            0.0001
        """
        if anchors.ndim != 2 or anchors.shape != candidates.shape or anchors.shape[0] == 0:
            raise ValueError(
                "anchors and candidates must be non-empty (N, D) tensors of the same shape, "
                f"got {tuple(anchors.shape)} and {tuple(candidates.shape)}"
            )
        num_samples = anchors.shape[0]
        device = anchors.device
        gather = self.gather_distributed and distributed.world_size() > 1
        samples_per_rank, first_sample = _layout(num_samples, device, gather)
        all_candidates = (
            distributed.all_gather_with_grad(candidates, samples_per_rank) if gather else candidates
        )
        num_global = sum(samples_per_rank)
        anchor_labels = first_sample + torch.arange(num_samples, device=device)  # (N,)
        candidate_labels = torch.arange(num_global, device=device)  # (N_all,)
        self_index = torch.full((num_samples,), -1, dtype=torch.long, device=device)  # (N,)
        weights = None
        if self.weighting is not None:
            similarities = positive_cosine_similarities(anchors, candidates)  # (N,)
            weights = self._global_weights(similarities, samples_per_rank, first_sample, gather)
        losses, _ = self._losses(
            anchors, all_candidates, anchor_labels, candidate_labels, self_index, weights
        )
        world = distributed.world_size() if gather else 1
        return world * losses.sum() / num_global

    def forward_multi_crop(
        self, global_views: Tensor, local_views: Tensor, labels: Tensor | None = None
    ) -> Tensor:
        r"""Multi-crop InfoNCE: local views are anchors only, against the global views.

        Every one of the ``(G + L) N`` views is an anchor; the candidates are the ``G N``
        global views (of all ranks when gathering); the positives :math:`P(i)` of anchor
        ``i`` are the global views of its image (of its class with ``labels``: SupCon), itself
        excluded; a local anchor is not among the candidates:

        .. math::

            \mathcal{L} = \frac{1}{|A|} \sum_{i \in A} -\frac{1}{|P(i)|}
                \sum_{p \in P(i)} \log \frac{\exp(s_{ip} / T)}
                {\sum_{k \in \mathrm{global},\, k \ne i} \exp(s_{ik} / T)}

        over the anchors :math:`A` with a positive; with ``decoupled`` the positives leave
        the denominator. For the global anchors alone this is :meth:`forward_views`. (Caron
        et al. 2020, SwAV's multi-crop; VISSL's multi-crop SimCLR.) The mean of the per-rank
        losses is the single-process loss on the concatenated batch, as in
        :meth:`forward_views`.

        Args:
            global_views: (G, N, D) embeddings of the global views.
            local_views: (L, N, D) embeddings of the local views of the same images.
            labels: optional (N,) class ids (SupCon).

        Returns:
            Scalar loss, float32 (float64 for float64 inputs).

        Raises:
            ValueError: on mismatched shapes, or with ``weighting`` (one positive per anchor
                only).

        Examples:
            >>> criterion = InfoNCELoss(temperature=0.5)
            >>> global_views, local_views = torch.ones(2, 4, 8), torch.ones(3, 4, 8)
            >>> round(criterion.forward_multi_crop(global_views, local_views).item(), 4)
            2.026
        """
        _check_views(global_views)
        _check_views(local_views)
        num_global, num_samples, dim = global_views.shape
        if local_views.shape[1:] != (num_samples, dim):
            raise ValueError(
                f"local_views must have shape (L, {num_samples}, {dim}) to match global_views "
                f"{tuple(global_views.shape)}, got {tuple(local_views.shape)}"
            )
        if self.weighting is not None:
            raise ValueError(
                f"weighting={self.weighting!r} needs one positive per anchor, which local "
                "views (each with every global view of its image as positive) do not have"
            )
        device = global_views.device
        gather = self.gather_distributed and distributed.world_size() > 1
        samples_per_rank, first_sample = _layout(num_samples, device, gather)
        sample_labels = (
            first_sample + torch.arange(num_samples, device=device) if labels is None else labels
        )  # (N,)
        candidates = global_views.reshape(num_global * num_samples, dim)  # (G N, D)
        candidate_labels = sample_labels.repeat(num_global)  # (G N,)
        anchors = torch.cat([candidates, local_views.reshape(-1, dim)])  # ((G + L) N, D)
        anchor_labels = sample_labels.repeat(num_global + local_views.shape[0])
        self_index = torch.cat(
            [
                num_global * first_sample + torch.arange(candidates.shape[0], device=device),
                torch.full((local_views.shape[0] * num_samples,), -1, device=device),
            ]
        )  # ((G + L) N,): a local anchor is not among the candidates
        if gather:
            sizes = [num_global * size for size in samples_per_rank]
            candidates = distributed.all_gather_with_grad(candidates, sizes)  # (G N_all, D)
            candidate_labels = distributed.all_gather(candidate_labels, sizes)
        losses, has_positive = self._losses(
            anchors, candidates, anchor_labels, candidate_labels, self_index
        )
        valid = int(has_positive.sum())
        num_valid_global = sum(distributed.all_gather_sizes(valid, device)) if gather else valid
        local_sum = torch.where(has_positive, losses, 0.0).sum()
        world = distributed.world_size() if gather else 1
        return world * local_sum / max(num_valid_global, 1)

    def _global_weights(
        self, similarities: Tensor, samples_per_rank: list[int], first_sample: int, gather: bool
    ) -> Tensor:
        """This rank's slice (N,) of the vMF weights of the global batch's positive pairs."""
        if gather:
            similarities = distributed.all_gather(similarities, samples_per_rank)  # (N_all,)
        weights = von_mises_fisher_weights(similarities, self.sigma)  # (N_all,)
        return weights[first_sample : first_sample + samples_per_rank[distributed.rank()]]

    def _gathered_loss(self, views: Tensor, labels: Tensor | None, gather: bool = True) -> Tensor:
        """The loss of ``views`` against all ranks' views (``gather``) or the local ones only
        (a world of one, for the decoupled and weighted forms)."""
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
        samples_per_rank, first_sample = _layout(num_samples, views.device, gather)
        if labels is None:
            sample_labels = first_sample + torch.arange(num_samples, device=views.device)  # (N,)
        else:
            sample_labels = labels

        anchors = views.reshape(num_views * num_samples, dim)  # (V N, D)
        anchor_labels = sample_labels.repeat(num_views)  # (V N,)
        candidates_per_rank = [num_views * size for size in samples_per_rank]
        if gather:
            candidates = distributed.all_gather_with_grad(anchors, candidates_per_rank)
            candidate_labels = distributed.all_gather(anchor_labels, candidates_per_rank)
        else:
            candidates, candidate_labels = anchors, anchor_labels  # (V N_all, D), (V N_all,)
        self_index = num_views * first_sample + torch.arange(
            num_views * num_samples, device=views.device
        )  # (V N,)
        weights = None
        if self.weighting is not None:  # 2 views, no labels (checked by forward_views)
            similarities = positive_cosine_similarities(views[0], views[1])  # (N,)
            pair_weights = self._global_weights(
                similarities, samples_per_rank, first_sample, gather
            )  # (N,)
            weights = pair_weights.repeat(num_views)  # (V N,), the same for both directions

        losses, has_positive = self._losses(
            anchors, candidates, anchor_labels, candidate_labels, self_index, weights
        )
        if labels is None:
            num_valid_global = losses.new_tensor(float(candidates.shape[0]))
        else:
            _, inverse, counts = torch.unique(
                candidate_labels, return_inverse=True, return_counts=True
            )
            num_valid_global = (counts[inverse] > 1).sum()
        local_sum = torch.where(has_positive, losses, 0.0).sum()
        world = distributed.world_size() if gather else 1
        return world * local_sum / num_valid_global.clamp(min=1)

    def _losses(
        self,
        anchors: Tensor,
        candidates: Tensor,
        anchor_labels: Tensor,
        candidate_labels: Tensor,
        self_index: Tensor,
        weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The per-anchor losses with this module's temperature, path and decoupling."""
        return _per_anchor_losses(
            anchors,
            candidates,
            anchor_labels,
            candidate_labels,
            self_index,
            self.current_temperature(),
            self.block_size,
            self.decoupled,
            weights,
        )

    def extra_repr(self) -> str:
        current = self.temperature  # the learnt one rounded: float32
        shown = current if isinstance(current, float) else f"{float(current):.6g}"
        return (
            f"temperature={shown}, "
            f"gather_distributed={self.gather_distributed}, block_size={self.block_size}, "
            f"decoupled={self.decoupled}, weighting={self.weighting}, sigma={self.sigma}, "
            f"learnable_temperature={self.learnable_temperature}, "
            f"min_temperature={self.min_temperature}"
        )
