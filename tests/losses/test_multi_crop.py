"""``InfoNCELoss.forward_multi_crop``: local views are anchors only, their positives the
global views of their image (of their class with labels). Against a float64 loop reference
(value and the gradients of both inputs, rtol 1e-9), dense and blocked, coupled and
decoupled; with negative controls (local views as candidates too, i.e. plain multi-view
InfoNCE over all crops, differs); and on two gloo ranks, equal to one process on the
concatenated batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from contrastive.losses import InfoNCELoss
from tests.helpers.gloo import launch, mean_over_ranks

RTOL, ATOL = 1e-9, 1e-12
TEMPERATURE = 0.3


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def reference(
    global_views: Tensor, local_views: Tensor, labels: Tensor | None, decoupled: bool
) -> Tensor:
    """The pairing written out: every crop an anchor; the candidates the global crops."""
    num_global, num_samples, _ = global_views.shape
    ids = labels.tolist() if labels is not None else list(range(num_samples))
    candidates = [
        (_unit(global_views[g, n]), ids[n], (g, n))
        for g in range(num_global)
        for n in range(num_samples)
    ]
    anchors = [
        (_unit(global_views[g, n]), ids[n], (g, n))
        for g in range(num_global)
        for n in range(num_samples)
    ]
    anchors += [
        (_unit(local_views[v, n]), ids[n], None)
        for v in range(local_views.shape[0])
        for n in range(num_samples)
    ]
    total, count = global_views.new_zeros(()), 0
    for anchor, label, where in anchors:
        others = [(c, c_label) for c, c_label, c_where in candidates if c_where != where]
        positives = [c for c, c_label in others if c_label == label]
        if not positives:
            continue
        denominator = [c for c, c_label in others if not (decoupled and c_label == label)]
        log_denominator = torch.logsumexp(
            torch.stack([anchor @ c / TEMPERATURE for c in denominator]), 0
        )
        total = total + sum(log_denominator - anchor @ p / TEMPERATURE for p in positives) / len(
            positives
        )
        count += 1
    return total / count


def inputs(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    global_views = torch.randn(2, 6, 5, dtype=torch.float64, generator=generator)
    local_views = torch.randn(3, 6, 5, dtype=torch.float64, generator=generator)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    return global_views, local_views, labels


@pytest.mark.parametrize("block_size", [None, 4])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("labelled", [False, True])
def test_multi_crop_equals_the_reference(
    block_size: int | None, decoupled: bool, labelled: bool
) -> None:
    global_views, local_views, labels = inputs()
    used = labels if labelled else None
    ours_g, ours_l = global_views.clone().requires_grad_(), local_views.clone().requires_grad_()
    criterion = InfoNCELoss(TEMPERATURE, block_size=block_size, decoupled=decoupled)
    loss = criterion.forward_multi_crop(ours_g, ours_l, used)
    loss.backward()
    ref_g, ref_l = global_views.clone().requires_grad_(), local_views.clone().requires_grad_()
    expected = reference(ref_g, ref_l, used, decoupled)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours_g.grad, ref_g.grad, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours_l.grad, ref_l.grad, rtol=RTOL, atol=ATOL)


def test_negative_control_local_views_as_candidates_differ() -> None:
    """Multi-view InfoNCE over all five crops (locals among the candidates) is another loss:
    the comparison above would see it."""
    global_views, local_views, _ = inputs()
    criterion = InfoNCELoss(TEMPERATURE)
    every_crop = criterion.forward_views(torch.cat([global_views, local_views]))
    expected = reference(global_views, local_views, None, decoupled=False)
    assert not torch.allclose(every_crop, expected, rtol=1e-3)
    # and without local views the global anchors alone are forward_views
    torch.testing.assert_close(
        criterion.forward_multi_crop(global_views, local_views[:0]),
        criterion.forward_views(global_views),
        rtol=RTOL,
        atol=ATOL,
    )


def test_weighting_is_refused_with_local_views() -> None:
    with pytest.raises(ValueError, match="weighting='vmf' needs one positive per anchor"):
        InfoNCELoss(weighting="vmf", decoupled=True).forward_multi_crop(*inputs()[:2])


def _two_ranks(rank: int, world: int) -> dict[str, Any]:
    global_views, local_views, labels = inputs(seed=1)
    weight = torch.eye(5, dtype=torch.float64, requires_grad=True)  # a linear "model"
    rows = slice(rank * 3, (rank + 1) * 3)
    results = {}
    for labelled in (False, True):
        weight.grad = None
        criterion = InfoNCELoss(TEMPERATURE, gather_distributed=True)
        loss = criterion.forward_multi_crop(
            global_views[:, rows] @ weight,
            local_views[:, rows] @ weight,
            labels[rows] if labelled else None,
        )
        loss.backward()
        assert weight.grad is not None
        results[labelled] = (mean_over_ranks(loss), mean_over_ranks(weight.grad))
    return results


@pytest.mark.ddp
def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    results = launch(_two_ranks, 2, tmp_path)
    global_views, local_views, labels = inputs(seed=1)
    for labelled in (False, True):
        weight = torch.eye(5, dtype=torch.float64, requires_grad=True)
        loss = InfoNCELoss(TEMPERATURE).forward_multi_crop(
            global_views @ weight, local_views @ weight, labels if labelled else None
        )
        loss.backward()
        for rank in (0, 1):
            mean_loss, grad = results[rank][labelled]
            torch.testing.assert_close(mean_loss, loss.detach(), rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(grad, weight.grad, rtol=RTOL, atol=ATOL)
