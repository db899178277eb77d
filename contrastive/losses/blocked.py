r"""The per-anchor contrastive losses in row blocks: exact, with O(block x C) extra memory.

The dense path (:func:`contrastive.losses.info_nce.contrastive_loss`) builds the whole
``(A, C)`` similarity matrix, and autograd keeps it (and a few same-sized masks) for the
backward pass: O(A C) memory, the limit at large batches. Here the forward pass walks the
anchors ``block_size`` rows at a time and keeps only each row's log-sum-exp; the backward
pass recomputes each block's similarities and uses

.. math::

    \frac{\partial \ell_i}{\partial s_{ik}} = \frac{1}{T}\Big(
        \mathrm{softmax}_{k \ne \mathrm{self}(i)}(s_{i\cdot}/T)_k
        - \frac{[k \in P(i)]}{|P(i)|}\Big)

so no ``(A, C)`` tensor ever exists. The result equals the dense path (values and
gradients to rounding: 1e-12 relative in float64 in the tests).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def block_terms(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Tensor,
    candidate_labels: Tensor,
    self_index: Tensor,
    temperature: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Scaled similarities of ``anchors`` (B, D) to ``candidates`` (C, D) with each anchor's
    self entry set to the dtype's lowest value, the positive mask (same label, not self) and
    the self mask; the dense path calls it on all anchors, the blocked one per block."""
    logits = anchors @ candidates.T / temperature  # (B, C)
    columns = torch.arange(candidates.shape[0], device=anchors.device)
    self_mask = self_index[:, None] == columns[None, :]  # (B, C)
    positive_mask = (anchor_labels[:, None] == candidate_labels[None, :]) & ~self_mask
    masked = logits.masked_fill(self_mask, torch.finfo(logits.dtype).min)
    return masked, positive_mask, self_mask


class BlockedContrastiveLosses(torch.autograd.Function):
    """``(losses (A,), num_positives (A,))`` of L2-normalised ``anchors`` (A, D) against
    ``candidates`` (C, D); differentiable in both embeddings (the second output is not)."""

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        candidates: Tensor,
        anchor_labels: Tensor,
        candidate_labels: Tensor,
        self_index: Tensor,
        temperature: float,
        block_size: int,
    ) -> tuple[Tensor, Tensor]:
        num_anchors = anchors.shape[0]
        losses = anchors.new_empty(num_anchors)
        log_denominator = anchors.new_empty(num_anchors)
        num_positives = torch.empty(num_anchors, dtype=torch.long, device=anchors.device)
        for start in range(0, num_anchors, block_size):
            rows = slice(start, start + block_size)
            masked, positive_mask, _ = block_terms(
                anchors[rows],
                candidates,
                anchor_labels[rows],
                candidate_labels,
                self_index[rows],
                temperature,
            )
            log_denominator[rows] = torch.logsumexp(masked, dim=1)
            count = positive_mask.sum(dim=1)
            num_positives[rows] = count
            positive_sum = torch.where(positive_mask, masked, 0.0).sum(dim=1)
            losses[rows] = log_denominator[rows] - positive_sum / count.clamp(min=1)
        ctx.save_for_backward(
            anchors, candidates, anchor_labels, candidate_labels, self_index, log_denominator
        )
        ctx.temperature, ctx.block_size = temperature, block_size
        ctx.mark_non_differentiable(num_positives)
        return losses, num_positives

    @staticmethod
    def backward(ctx: Any, grad_losses: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        anchors, candidates, anchor_labels, candidate_labels, self_index, log_denominator = (
            ctx.saved_tensors
        )
        temperature, block_size = ctx.temperature, ctx.block_size
        grad_anchors = torch.zeros_like(anchors)
        grad_candidates = torch.zeros_like(candidates)
        for start in range(0, anchors.shape[0], block_size):
            rows = slice(start, start + block_size)
            masked, positive_mask, self_mask = block_terms(
                anchors[rows],
                candidates,
                anchor_labels[rows],
                candidate_labels,
                self_index[rows],
                temperature,
            )
            # softmax over the non-self candidates; the masked self entry gets no gradient
            probabilities = torch.exp(masked - log_denominator[rows, None]).masked_fill(
                self_mask, 0.0
            )
            inverse_count = 1.0 / positive_mask.sum(dim=1).clamp(min=1).to(anchors.dtype)
            grad_logits = probabilities - positive_mask * inverse_count[:, None]
            grad_logits *= grad_losses[rows, None] / temperature  # d loss / d (a . c)
            grad_anchors[rows] = grad_logits @ candidates
            grad_candidates += grad_logits.T @ anchors[rows]
        return grad_anchors, grad_candidates, None, None, None, None, None
