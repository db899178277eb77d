"""``supcon_loss`` against an independent float64 loop reference and against
pytorch-metric-learning's ``SupConLoss``.

PML (``pytorch_metric_learning/losses/supcon_loss.py``, 2.9): per anchor ``i`` it computes
``-(sum_p log_prob_ip) / (|P(i)| + tiny)`` with the log-softmax over all ``k != i`` (cosine
similarities / T), i.e. our per-anchor term (``tiny`` = the dtype's smallest normal number,
which leaves ``|P(i)| >= 1`` unchanged), 0 for an anchor without positives; then its
``AvgNonZeroReducer`` averages the losses that are ``> 0``. So it equals ours (the mean over
the anchors with a positive) whenever no anchor with positives has a loss of exactly 0; and
when the batch has no negative pair at all (one label) PML returns 0, where ours is the mean
of the (positive) per-anchor terms. Both relations are tested exactly below.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from contrastive.losses import contrastive_loss, multi_view_info_nce, supcon_loss

RTOL, ATOL = 1e-9, 1e-12  # float64

LABELS = [0, 1, 0, 2, 1, 7, 2, 0, 3, 3, 1, 9]  # 7 and 9 are singletons: no positives


def _embeddings(num: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num, 6, generator=generator, dtype=torch.float64).requires_grad_()


def _value_and_grad(loss: Tensor, leaf: Tensor) -> list[Tensor]:
    return [loss.detach(), *torch.autograd.grad(loss, [leaf])]


def _assert_same(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


def _reference(embeddings: Tensor, labels: Sequence[int], temperature: float) -> Tensor:
    """SupCon L_out written out: per anchor with positives, minus the mean over its positives
    of log(exp(s_ip / T) / sum_{k != i} exp(s_ik / T)); mean over those anchors."""
    units = [v / torch.sqrt((v * v).sum()) for v in embeddings]
    total, num_valid = torch.zeros((), dtype=torch.float64), 0
    for i, anchor in enumerate(units):
        others = [k for k in range(len(units)) if k != i]
        positives = [k for k in others if labels[k] == labels[i]]
        if not positives:
            continue
        logits = {k: anchor @ units[k] / temperature for k in others}
        log_denominator = torch.log(torch.stack([torch.exp(logits[k]) for k in others]).sum())
        total = total - sum(logits[p] - log_denominator for p in positives) / len(positives)
        num_valid += 1
    return total / max(num_valid, 1)


@pytest.mark.parametrize("temperature", [0.07, 0.3])
@pytest.mark.parametrize("block_size", [None, 5])
def test_matches_loop_reference(temperature: float, block_size: int | None) -> None:
    embeddings = _embeddings(len(LABELS), seed=1)
    actual = _value_and_grad(
        supcon_loss(embeddings, torch.tensor(LABELS), temperature, block_size), embeddings
    )
    expected = _value_and_grad(_reference(embeddings, LABELS, temperature), embeddings)
    _assert_same(actual, expected)
    # negative control: averaging over all M anchors (singletons counted as 0) is different
    mean_over_all = expected[0] * (len(LABELS) - 2) / len(LABELS)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(actual[0], mean_over_all, rtol=RTOL, atol=ATOL)


def test_is_the_core_and_the_one_view_form() -> None:
    embeddings = _embeddings(len(LABELS), seed=2).detach()
    labels = torch.tensor(LABELS)
    loss = supcon_loss(embeddings, labels, 0.2)
    core = contrastive_loss(embeddings, embeddings, labels, labels, torch.arange(12), 0.2)
    assert torch.equal(loss, core)
    torch.testing.assert_close(
        loss, multi_view_info_nce(embeddings[None], 0.2, labels), rtol=RTOL, atol=ATOL
    )


def test_no_positives_and_validation() -> None:
    embeddings = _embeddings(4, seed=3)
    loss = supcon_loss(embeddings, torch.arange(4))
    (grad,) = torch.autograd.grad(loss, [embeddings])
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    with pytest.raises(ValueError, match=r"non-empty \(M, D\) tensor, got shape \(4,\)"):
        supcon_loss(torch.randn(4), torch.arange(4))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\).*got \(3,\)"):
        supcon_loss(torch.randn(4, 2), torch.arange(3))
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(torch.randn(4, 2), torch.arange(4), temperature=0.0)


# --------------------------------------------------------------------------------------------
# pytorch-metric-learning
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pytorch_metric_learning(temperature: float, seed: int) -> None:
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    embeddings = _embeddings(len(LABELS), seed=10 + seed)
    labels = torch.tensor(LABELS)
    ours = _value_and_grad(supcon_loss(embeddings, labels, temperature), embeddings)
    theirs = _value_and_grad(
        losses.SupConLoss(temperature=temperature)(embeddings, labels), embeddings
    )
    _assert_same(ours, theirs)
    # negative control: the comparison sees a different temperature
    other = _value_and_grad(supcon_loss(embeddings, labels, temperature * 1.01), embeddings)
    with pytest.raises(AssertionError):
        _assert_same(other, theirs)


def test_pytorch_metric_learning_returns_zero_without_negatives() -> None:
    """The documented difference: one label in the whole batch. PML returns 0 (its loss
    needs a negative pair); ours is the mean of the per-anchor terms, each > 0."""
    losses = pytest.importorskip("pytorch_metric_learning.losses")
    embeddings = _embeddings(5, seed=4)
    labels = torch.zeros(5, dtype=torch.long)
    theirs = losses.SupConLoss(temperature=0.2)(embeddings, labels)
    assert theirs.item() == 0.0
    ours = supcon_loss(embeddings, labels, 0.2)
    torch.testing.assert_close(ours, _reference(embeddings, [0] * 5, 0.2), rtol=RTOL, atol=ATOL)
    assert ours.item() > 0
