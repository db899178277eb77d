"""``InfoNCELoss.forward_pairs`` and the decoupled / vMF-weighted module on one process and on
two gloo ranks.

- one process: ``forward_pairs`` against a float64 loop reference (value, gradients of both
  inputs), coupled, decoupled and vMF-weighted, dense and blocked;
- two gloo ranks (``ddp``): each rank holds a slice of one fixed batch; the mean of the
  per-rank losses and the DDP-averaged gradients of a linear "model" equal one process on the
  concatenated batch (float64, rtol 1e-9), for ``forward_pairs`` and for decoupled (DCL,
  DCLW) ``forward`` / ``forward_views``, with equal and unequal slices. Negative controls: the
  detached gather of ``tests/test_distributed.py`` (loses the cross-rank gradients) and the
  vMF softmax over the local batch (what lightly's ``DCLWLoss(gather_distributed=True)``
  does) are both caught by the same comparison.

The ranks are spawned by :func:`tests.helpers.gloo.launch`; the gather bug and DDP's gradient
averaging come from there too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive import distributed
from contrastive.losses import InfoNCELoss
from contrastive.losses.weighting import von_mises_fisher_weights
from tests.helpers.gloo import (
    gather_replaced_by,
    gather_without_grad,
    gloo_available,
    launch,
    mean_over_ranks,
)

RTOL, ATOL = 1e-9, 1e-12  # float64
TEMPERATURE, SIGMA = 0.2, 0.4


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def reference_pairs(
    anchors: Tensor, candidates: Tensor, temperature: float, decoupled: bool, sigma: float | None
) -> Tensor:
    """Anchor n: positive candidate n, negatives all other candidates; the denominator has
    every candidate (coupled) or all but the positive (decoupled); vMF weights of the pairs'
    cosine similarities (detached) when ``sigma`` is given."""
    num = anchors.shape[0]
    a = [_unit(v) for v in anchors]
    c = [_unit(v) for v in candidates]
    weights: list[Tensor | float] = [1.0] * num
    if sigma is not None:
        exps = [torch.exp((a[n] @ c[n]).detach() / sigma) for n in range(num)]
        weights = [2 - num * e / sum(exps) for e in exps]
    total = torch.zeros((), dtype=torch.float64)
    for n in range(num):
        logits = [a[n] @ c[m] / temperature for m in range(num)]
        terms = [logits[m] for m in range(num) if not (decoupled and m == n)]
        log_sum = torch.log(torch.stack([torch.exp(t) for t in terms]).sum()) if terms else 0.0
        total = total - weights[n] * logits[n] + log_sum
    return total / num


def _leaves(num: int, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(num, 5, generator=generator, dtype=torch.float64).requires_grad_()
        for _ in range(2)
    ]


def _value_and_grads(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    loss = fn(*inputs)
    return [loss.detach(), *torch.autograd.grad(loss, list(inputs))]


def _assert_same(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# one process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num", [1, 3, 9])
@pytest.mark.parametrize(
    ("decoupled", "weighting"), [(False, None), (True, None), (True, "vmf"), (False, "vmf")]
)
@pytest.mark.parametrize("block_size", [None, 2])
def test_forward_pairs_matches_loop_reference(
    num: int, decoupled: bool, weighting: str | None, block_size: int | None
) -> None:
    inputs = _leaves(num, seed=num)
    criterion = InfoNCELoss(
        TEMPERATURE, block_size=block_size, decoupled=decoupled, weighting=weighting, sigma=SIGMA
    )
    sigma = SIGMA if weighting else None
    actual = _value_and_grads(criterion.forward_pairs, inputs)
    expected = _value_and_grads(
        lambda a, c: reference_pairs(a, c, TEMPERATURE, decoupled, sigma), inputs
    )
    _assert_same(actual, expected)
    if num > 1:  # negative control: the other denominator
        other = _value_and_grads(
            lambda a, c: reference_pairs(a, c, TEMPERATURE, not decoupled, sigma), inputs
        )
        with pytest.raises(AssertionError):
            _assert_same(actual, other)


def test_forward_pairs_is_one_directional_cross_entropy() -> None:
    """Coupled and unweighted it is CPC/CLIP's one-directional InfoNCE; the anchors are not
    among the candidates (including them, as in NT-Xent, gives another loss)."""
    inputs = _leaves(6, seed=20)

    def expected(a: Tensor, c: Tensor) -> Tensor:
        logits = F.normalize(a, dim=1) @ F.normalize(c, dim=1).T / TEMPERATURE  # (N, N)
        return F.cross_entropy(logits, torch.arange(6))

    criterion = InfoNCELoss(TEMPERATURE)
    actual = _value_and_grads(criterion.forward_pairs, inputs)
    _assert_same(actual, _value_and_grads(expected, inputs))
    with pytest.raises(AssertionError):
        _assert_same(actual, _value_and_grads(criterion, inputs))  # NT-Xent of the same pair


def test_forward_pairs_anchors_without_gradient_and_validation() -> None:
    """NNCLR: the anchors (nearest neighbours) carry no gradient."""
    anchors, candidates = _leaves(4, seed=21)
    loss = InfoNCELoss(TEMPERATURE).forward_pairs(anchors.detach(), candidates)
    loss.backward()
    assert candidates.grad is not None and anchors.grad is None
    criterion = InfoNCELoss()
    with pytest.raises(ValueError, match=r"anchors and candidates .* got \(4, 5\) and \(3, 5\)"):
        criterion.forward_pairs(torch.randn(4, 5), torch.randn(3, 5))
    with pytest.raises(ValueError, match="non-empty"):
        criterion.forward_pairs(torch.randn(0, 5), torch.randn(0, 5))


# --------------------------------------------------------------------------------------------
# two gloo ranks
# --------------------------------------------------------------------------------------------

DIM_IN, DIM_OUT = 6, 4
PARTITIONS = ([5, 5], [7, 3])  # each covers the whole batch of 10
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 7, 1, 0, 2])  # class 7: a singleton
MODES = {
    # name: (decoupled, weighting)
    "pairs": (False, None),
    "pairs_dcl": (True, None),
    "pairs_dclw": (True, "vmf"),
    "pair_dcl": (True, None),
    "pair_dclw": (True, "vmf"),
    "views3_dcl": (True, None),
    "supcon_dcl": (True, None),
}


def _fixed_problem() -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, sum(PARTITIONS[0]), DIM_IN, generator=generator, dtype=torch.float64)
    weight_a = torch.randn(DIM_IN, DIM_OUT, generator=generator, dtype=torch.float64)
    weight_c = torch.randn(DIM_IN, DIM_OUT, generator=generator, dtype=torch.float64)
    return x, weight_a, weight_c


def _mode_loss(
    mode: str, x: Tensor, weight_a: Tensor, weight_c: Tensor, labels: Tensor, gather: bool
) -> Tensor:
    """The loss of ``mode`` on the samples ``x`` (V, n, D_in): ``forward_pairs`` with anchors
    ``x[0] W_a`` and candidates ``x[1] W_c``, the others on views ``x W_a``."""
    decoupled, weighting = MODES[mode]
    criterion = InfoNCELoss(
        TEMPERATURE, gather_distributed=gather, decoupled=decoupled, weighting=weighting,
        sigma=SIGMA,
    )  # fmt: skip
    if mode.startswith("pairs"):
        return criterion.forward_pairs(x[0] @ weight_a, x[1] @ weight_c)
    views = x @ weight_a  # (V, n, D)
    if mode.startswith("pair_"):
        return criterion(views[0], views[1])
    if mode == "views3_dcl":
        return criterion.forward_views(views)
    return criterion.forward_views(views[:1], labels)


def _local_vmf_weights(
    self: InfoNCELoss, similarities: Tensor, sizes: list[int], first: int, gather: bool
) -> Tensor:
    """lightly's DDP behaviour, for the negative control: softmax over the local batch."""
    return von_mises_fisher_weights(similarities, self.sigma)


@contextmanager
def _local_vmf() -> Iterator[None]:
    original = InfoNCELoss._global_weights
    InfoNCELoss._global_weights = _local_vmf_weights  # type: ignore[method-assign]
    try:
        yield
    finally:
        InfoNCELoss._global_weights = original  # type: ignore[method-assign]


def _task(rank: int, world: int) -> dict[str, Any]:
    x, weight_a0, weight_c0 = _fixed_problem()
    results: dict[str, Any] = {}
    for sizes in PARTITIONS:
        start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        for mode in MODES:
            variants = ["library"]
            if mode.startswith("pairs"):
                variants.append("buggy_gather")
            if mode.endswith("dclw"):
                variants.append("local_vmf")
            for variant in variants:
                weight_a = weight_a0.clone().requires_grad_()
                weight_c = weight_c0.clone().requires_grad_()
                context = {
                    "library": gather_replaced_by(distributed.all_gather_with_grad),
                    "buggy_gather": gather_replaced_by(gather_without_grad),
                    "local_vmf": _local_vmf(),
                }[variant]
                with context:
                    loss = _mode_loss(
                        mode, x[:, start:stop], weight_a, weight_c, LABELS[start:stop], True
                    )
                grads = torch.autograd.grad(loss, [weight_a, weight_c], allow_unused=True)
                results[f"{sizes}/{mode}/{variant}"] = {
                    "mean_loss": mean_over_ranks(loss),
                    "grads": [
                        mean_over_ranks(torch.zeros_like(weight_a0) if g is None else g)
                        for g in grads
                    ],
                }
    return results


def _single_process(mode: str) -> list[Tensor]:
    x, weight_a0, weight_c0 = _fixed_problem()
    weight_a = weight_a0.clone().requires_grad_()
    weight_c = weight_c0.clone().requires_grad_()
    loss = _mode_loss(mode, x, weight_a, weight_c, LABELS, False)
    grads = torch.autograd.grad(loss, [weight_a, weight_c], allow_unused=True)
    return [loss.detach(), *(torch.zeros_like(weight_a0) if g is None else g for g in grads)]


@pytest.mark.ddp
@gloo_available
def test_two_gloo_ranks_equal_one_process(tmp_path: Path) -> None:
    results = launch(_task, 2, tmp_path / "ranks")
    for sizes in PARTITIONS:
        assert sum(sizes) == LABELS.shape[0]  # the single process sees the same batch
        for mode in MODES:
            expected = _single_process(mode)
            for rank_results in results:
                got = rank_results[f"{sizes}/{mode}/library"]
                _assert_same([got["mean_loss"], *got["grads"]], expected)
                if mode.startswith("pairs"):  # same loss, but cross-rank gradients lost
                    buggy = rank_results[f"{sizes}/{mode}/buggy_gather"]
                    torch.testing.assert_close(
                        buggy["mean_loss"], expected[0], rtol=RTOL, atol=ATOL
                    )
                    with pytest.raises(AssertionError):
                        _assert_same(buggy["grads"], expected[1:])
                if mode.endswith("dclw"):  # local vMF softmax: another loss
                    local = rank_results[f"{sizes}/{mode}/local_vmf"]
                    with pytest.raises(AssertionError):
                        torch.testing.assert_close(
                            local["mean_loss"], expected[0], rtol=RTOL, atol=ATOL
                        )
