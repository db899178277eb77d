r"""The per-anchor contrastive losses in row blocks: exact, with O(block x C) extra memory.

The dense path (:func:`contrastive.losses.info_nce.contrastive_loss`) builds the whole
``(A, C)`` similarity matrix, and autograd keeps it (and a few same-sized masks) for the
backward pass: O(A C) memory, the limit at large batches. Here the forward pass walks the
anchors ``block_size`` rows at a time through one reused ``(block, C)`` buffer and keeps
only each row's log-sum-exp; the backward pass recomputes each block's similarities and uses

.. math::

    \frac{\partial \ell_i}{\partial s_{ik}} = \frac{1}{T}\Big(
        \mathrm{softmax}_{k \ne \mathrm{self}(i)}(s_{i\cdot}/T)_k
        - \frac{[k \in P(i)]}{|P(i)|}\Big)

so no ``(A, C)`` tensor ever exists. The positive terms never touch the blocks: with
:math:`S_l = \sum_{k : y_k = l} c_k` the sum of the candidates of label ``l``, the positives'
mean logit of anchor ``i`` is :math:`a_i \cdot (S_{y_i} - [\text{self}]\, c_{\mathrm{self}(i)})
/ (T |P(i)|)`, and their gradients are per-label sums of the same kind: O((A + C) D) work, and
no ``(block, C)`` label mask. The result equals the dense path (values and gradients to
rounding: 1e-9 relative in float64 in the tests).

Two options change the maths as in the dense path. ``decoupled`` (DCL, Yeh et al. 2022) drops
the positives from the denominator: each block's positives are masked by one ``(block, C)``
label compare in the forward pass, and their probabilities are zeroed in the backward pass
(the log-sum-exp over no candidates at all is taken as 0, with no gradient). ``positive_weights``
``w`` (A,) multiply each anchor's positive term, and so its positive-part gradient:
:math:`\ell_i = \mathrm{lse}_i - w_i\, a_i \cdot (\ldots) / (T |P(i)|)`.

The temperature may be a float (a constant: no gradient) or a 0-dim tensor (a learnt one).
For a tensor the backward pass also returns

.. math::

    \frac{\partial \ell_i}{\partial T} = -\frac{1}{T^2}\Big(
        \sum_{k \in D(i)} p_{ik}\, s_{ik} - \frac{w_i}{|P(i)|} \sum_{p \in P(i)} s_{ip}\Big)
    = -\frac{1}{T}\, a_i \cdot \frac{\partial \ell_i}{\partial a_i},

with :math:`p_{ik}` the softmax over the denominator's entries :math:`D(i)` (0 elsewhere):
the expectation :math:`\sum_k p_{ik} s_{ik} = a_i \cdot \sum_k p_{ik} c_k` is the anchor
gradient's softmax part, already computed block by block, and the loss depends on the anchors
and ``T`` only through :math:`a_i / T`. So ``dL/dT = -(1/T) sum_i a_i . dL/da_i``: O(A D)
extra work, no extra pass over the blocks; decoupled and weighted forms included (their masks
and weights are constants). The float path is unchanged.

Which path a loss takes is decided here too: :func:`resolve_block_size` turns the losses'
``block_size`` argument (``"auto"``, an int or ``None``) into rows per block or the dense path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

# Measured on the 2-core CPU (docs/BENCHMARKS.md, scripts/bench_loss.py): the blocked path is
# as fast as the dense one at 2N = 512 and faster from 2N = 1024 on (1.4x at 1024, 3.5x at
# 4096), so "auto" takes it from 1024 x 1024 similarities up; 512-row blocks were the fastest
# at 2N = 4096 and 16384, and the buffer is capped at 256 MiB for very large C.
AUTO_BLOCKED_MIN_ENTRIES = 1024 * 1024
AUTO_BLOCK_ROWS = 512
AUTO_BLOCK_MAX_BYTES = 256 * 2**20

BlockSize = int | str | None
"""``"auto"`` (the default): blocked above :data:`AUTO_BLOCKED_MIN_ENTRIES` similarities, in
blocks of :data:`AUTO_BLOCK_ROWS` rows; an int: always blocked, that many rows; ``None``:
always dense."""


def check_block_size(block_size: BlockSize) -> BlockSize:
    """``block_size`` if it is ``"auto"``, ``None`` or an int >= 1; ValueError otherwise."""
    if block_size is None or block_size == "auto":
        return block_size
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(
            f"block_size must be 'auto', null (the dense path) or an integer >= 1 (rows per "
            f"block), got {block_size!r}"
        )
    return block_size


def resolve_block_size(
    block_size: BlockSize, num_anchors: int, num_candidates: int, itemsize: int = 4
) -> int | None:
    """The rows per block for ``block_size`` at this size, or ``None`` for the dense path."""
    check_block_size(block_size)
    if isinstance(block_size, int):
        return None if block_size >= num_anchors else block_size
    if block_size is None:
        return None
    if num_anchors * num_candidates < AUTO_BLOCKED_MIN_ENTRIES:
        return None
    rows = AUTO_BLOCK_MAX_BYTES // max(num_candidates * itemsize, 1)
    rows = max(16, min(AUTO_BLOCK_ROWS, rows))
    return None if rows >= num_anchors else rows


class _Saved(NamedTuple):
    """What the forward pass keeps for the backward pass: O((A + C) D), no (A, C) tensor."""

    anchors: Tensor  # (A, D), L2-normalised
    candidates: Tensor  # (C, D), L2-normalised
    anchor_ids: Tensor  # (A,) labels as 0 .. L-1
    candidate_ids: Tensor  # (C,)
    has_self: Tensor  # (A,) bool: the anchor is among the candidates
    safe_self: Tensor  # (A,) its column (clamped into range where it is not)
    self_positive: Tensor  # (A,) bool: that column carries the anchor's label
    num_positives: Tensor  # (A,) |P(i)|
    positive_sums: Tensor  # (A, D) the sum of each anchor's positives
    log_denominator: Tensor  # (A,) log-sum-exp over the non-self (non-positive) candidates
    positive_weights: Tensor  # (A,) w_i (ones when not weighted)


def _label_ids(anchor_labels: Tensor, candidate_labels: Tensor) -> tuple[Tensor, Tensor, int]:
    """Both label vectors mapped onto ``0 .. L-1`` (one id space), and ``L``."""
    unique, inverse = torch.unique(
        torch.cat([anchor_labels, candidate_labels]), return_inverse=True
    )
    num_anchors = anchor_labels.shape[0]
    return inverse[:num_anchors], inverse[num_anchors:], unique.shape[0]


def _blocks(
    scaled_anchors: Tensor,
    candidates: Tensor,
    has_self: Tensor,
    safe_self: Tensor,
    block_size: int,
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
    """The anchors ``block_size`` rows at a time, as ``(rows, logits, self_rows,
    self_columns)``: ``logits`` (rows, C) = ``a_i . c_k / T`` in one buffer reused for every
    block (overwritten by the next), each anchor's self entry at the dtype's lowest value (a
    finite "minus infinity", as in the dense path) and found at ``[self_rows, self_columns]``."""
    num_anchors = scaled_anchors.shape[0]
    buffer = scaled_anchors.new_empty(min(block_size, num_anchors), candidates.shape[0])
    lowest = torch.finfo(buffer.dtype).min
    for start in range(0, num_anchors, block_size):
        rows = slice(start, start + block_size)
        block = scaled_anchors[rows]
        self_rows = has_self[rows].nonzero().squeeze(1)
        self_columns = safe_self[rows][self_rows]
        logits = buffer[: block.shape[0]]
        torch.mm(block, candidates.T, out=logits)
        logits[self_rows, self_columns] = lowest
        yield rows, logits, self_rows, self_columns


class BlockedContrastiveLosses(torch.autograd.Function):
    """``(losses (A,), num_positives (A,))`` of L2-normalised ``anchors`` (A, D) against
    ``candidates`` (C, D); differentiable in both embeddings (the second output is not).

    A ``self_index`` outside ``[0, C)`` means "this anchor is not among the candidates".
    ``decoupled``: the positives leave the denominator (DCL); ``positive_weights`` (A,) or
    ``None``: constants multiplying each anchor's positive term. ``temperature``: a float, or
    a 0-dim tensor of the anchors' dtype, then differentiable (see the module docstring)."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        candidates: Tensor,
        anchor_labels: Tensor,
        candidate_labels: Tensor,
        self_index: Tensor,
        temperature: float | Tensor,
        block_size: int,
        decoupled: bool = False,
        positive_weights: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        num_anchors, num_candidates = anchors.shape[0], candidates.shape[0]
        anchor_ids, candidate_ids, num_labels = _label_ids(anchor_labels, candidate_labels)
        has_self = (self_index >= 0) & (self_index < num_candidates)  # (A,)
        safe_self = self_index.clamp(0, num_candidates - 1)
        # the anchor's own column is never a positive; it only matters where its label matches
        self_positive = has_self & (candidate_ids[safe_self] == anchor_ids)  # (A,)

        label_sums = anchors.new_zeros(num_labels, anchors.shape[1])
        label_sums.index_add_(0, candidate_ids, candidates)  # (L, D)
        label_counts = torch.bincount(candidate_ids, minlength=num_labels)  # (L,)
        num_positives = label_counts[anchor_ids] - self_positive.long()  # (A,)
        positive_sums = label_sums[anchor_ids] - self_positive[:, None] * candidates[safe_self]
        scaled = anchors / temperature  # (A, D)
        positive_mean = (scaled * positive_sums).sum(dim=1) / num_positives.clamp(min=1)
        if positive_weights is None:
            weights = torch.ones_like(positive_mean)  # (A,)
        else:
            weights = positive_weights
            positive_mean = weights * positive_mean

        log_denominator = anchors.new_empty(num_anchors)
        lowest = torch.finfo(anchors.dtype).min
        for rows, logits, _, _ in _blocks(scaled, candidates, has_self, safe_self, block_size):
            if decoupled:  # the positives leave the denominator (self is already out)
                logits.masked_fill_(anchor_ids[rows, None] == candidate_ids[None, :], lowest)
            row_max = logits.amax(dim=1, keepdim=True)  # stable log-sum-exp, in place
            row_sum = logits.sub_(row_max).exp_().sum(dim=1)
            log_denominator[rows] = row_max.squeeze(1) + row_sum.log()
        if decoupled:  # no negative at all: an empty log-sum-exp, taken as 0
            num_negatives = num_candidates - has_self.long() - num_positives  # (A,)
            log_denominator = torch.where(num_negatives > 0, log_denominator, 0.0)
        losses = log_denominator - positive_mean

        learnt = [temperature] if isinstance(temperature, Tensor) else []  # () or nothing
        ctx.save_for_backward(
            *_Saved(
                anchors,
                candidates,
                anchor_ids,
                candidate_ids,
                has_self,
                safe_self,
                self_positive,
                num_positives,
                positive_sums,
                log_denominator,
                weights,
            ),
            *learnt,
        )
        ctx.temperature = None if learnt else temperature  # a float is kept as it is
        ctx.block_size, ctx.num_labels = block_size, num_labels
        ctx.decoupled = decoupled
        ctx.mark_non_differentiable(num_positives)
        return losses, num_positives

    @staticmethod
    def backward(ctx: Any, grad_losses: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        tensors = ctx.saved_tensors
        saved = _Saved(*tensors[: len(_Saved._fields)])
        anchors, candidates, safe_self = saved.anchors, saved.candidates, saved.safe_self
        learnt = ctx.temperature is None
        temperature = tensors[-1] if learnt else ctx.temperature
        block_size = ctx.block_size
        weight = grad_losses / temperature  # (A,): d loss / d (a_i . c_k) = weight_i * dl/ds
        scaled = anchors / temperature

        # Softmax part, block by block: p_ik = exp(s_ik / T - lse_i), self entries 0.
        grad_anchors = torch.empty_like(anchors)
        grad_candidates = torch.zeros_like(candidates)
        blocks = _blocks(scaled, candidates, saved.has_self, safe_self, block_size)
        for rows, probabilities, self_rows, self_columns in blocks:
            probabilities.sub_(saved.log_denominator[rows, None]).exp_()
            probabilities[self_rows, self_columns] = 0.0  # also when self is the only column
            if ctx.decoupled:  # positives are not in the denominator: no softmax gradient
                positives = saved.anchor_ids[rows, None] == saved.candidate_ids[None, :]
                probabilities.masked_fill_(positives, 0.0)
            torch.mm(probabilities, candidates, out=grad_anchors[rows])
            grad_anchors[rows] *= weight[rows, None]
            grad_candidates.addmm_(probabilities.T, anchors[rows] * weight[rows, None])

        # Positive part: -w_i weight_i / |P(i)| for every positive pair (i, k), by label sums.
        positive_weight = saved.positive_weights * weight / saved.num_positives.clamp(min=1)
        grad_anchors -= positive_weight[:, None] * saved.positive_sums
        weighted = positive_weight[:, None] * anchors  # (A, D)
        anchor_sums = anchors.new_zeros(ctx.num_labels, anchors.shape[1])
        anchor_sums.index_add_(0, saved.anchor_ids, weighted)  # (L, D)
        grad_candidates -= anchor_sums[saved.candidate_ids]
        self_positive = saved.self_positive
        grad_candidates.index_add_(0, safe_self[self_positive], weighted[self_positive])

        grad_temperature = None
        if learnt and ctx.needs_input_grad[5]:  # the loss is a function of a_i / T: Euler
            grad_temperature = -(anchors * grad_anchors).sum() / temperature  # ()
        return (
            grad_anchors,
            grad_candidates,
            None,
            None,
            None,
            grad_temperature,
            None,
            None,
            None,
        )
