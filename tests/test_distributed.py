"""Distributed exactness of ``InfoNCELoss(gather_distributed=True)`` on real gloo process groups.

Claim under test: splitting one fixed batch over ``R`` ranks, gathering embeddings with
:func:`contrastive.distributed.all_gather_with_grad` and letting DDP average the parameter
gradients gives **the same loss and the same gradients** as one process on the whole batch.

- ``test_loss_and_weight_grad_match_single_process``: a linear "model" ``z = x @ W`` replicated
  on every rank; each rank computes its loss on its slice and backpropagates, then
  ``W.grad`` is all-reduced (SUM) and divided by the world size, exactly what DDP does. The mean
  of the per-rank losses and that averaged ``W.grad`` must equal the single-process loss and
  ``W.grad`` on the concatenated batch (float64, rtol 1e-9) -- for R = 2 and 3, equal and
  unequal slices, the two-view form, three views without labels, and SupCon with labels.
- ``testgather_without_grad_is_caught``: negative control. The classic bug (all-gather into
  detached buffers, own slot replaced by the local tensor) leaves the loss value unchanged but
  loses the cross-rank gradient terms; the same comparison must reject it.
- ``test_ddp_training_matches_single_process``: a BatchNorm-free MLP wrapped in
  ``DistributedDataParallel`` on 2 ranks, fixed views, 5 SGD-with-momentum steps: final weights
  equal the single-process run on the full batch (float64, rtol 1e-9); without the gather the
  weights measurably differ (negative control).

Workers are spawned with :mod:`torch.multiprocessing` (rendezvous through a file store in the
test's tmp dir), pass results back through ``torch.save`` files, and are killed if they do not
finish before a deadline, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from contrastive.losses import InfoNCELoss, info_nce, multi_view_info_nce
from tests.helpers.gloo import gather_replaced_by, gather_without_grad, launch, mean_over_ranks

pytestmark = [
    pytest.mark.ddp,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo is not available",
    ),
]

TEMPERATURE = 0.2
NUM_SAMPLES, DIM_IN, DIM_OUT, NUM_VIEWS = 12, 7, 5, 3
# Classes mix across every slicing used below; class 7 has a single sample, so in the one-view
# SupCon mode its anchor has no positive and must drop out of the *global* mean.
LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 7, 1, 0, 2, 1, 0])
PARTITIONS = {2: ([6, 6], [7, 5]), 3: ([4, 4, 4], [5, 4, 3])}
MODES = ("pair", "views3", "supcon", "supcon_1view")
RTOL, ATOL = 1e-9, 1e-12  # float64 throughout
TRAIN_STEPS = 5


# --------------------------------------------------------------------------------------------
# fixed problem, shared by workers and the single-process reference
# --------------------------------------------------------------------------------------------


def _fixed_problem() -> tuple[Tensor, Tensor]:
    """Views ``x`` (V, N, D_in) and linear weights ``W`` (D_in, D), float64, fixed seed."""
    generator = torch.Generator().manual_seed(20240607)
    x = torch.randn(NUM_VIEWS, NUM_SAMPLES, DIM_IN, dtype=torch.float64, generator=generator)
    weight = torch.randn(DIM_IN, DIM_OUT, dtype=torch.float64, generator=generator)
    return x, weight


def _loss(mode: str, criterion: InfoNCELoss, z: Tensor, labels: Tensor) -> Tensor:
    """The four loss forms through the module API; ``z`` (V, n, D), ``labels`` (n,)."""
    if mode == "pair":
        return criterion(z[0], z[1])
    if mode == "views3":
        return criterion.forward_views(z)
    if mode == "supcon":
        return criterion.forward_views(z[:2], labels)
    if mode == "supcon_1view":
        return criterion.forward_views(z[:1], labels)
    raise ValueError(mode)


def _reference_loss(mode: str, z: Tensor, labels: Tensor) -> Tensor:
    """Single-process loss on the full batch through the plain functions (no gather path)."""
    if mode == "pair":
        return info_nce(z[0], z[1], TEMPERATURE)
    if mode == "views3":
        return multi_view_info_nce(z, TEMPERATURE)
    if mode == "supcon":
        return multi_view_info_nce(z[:2], TEMPERATURE, labels)
    if mode == "supcon_1view":
        return multi_view_info_nce(z[:1], TEMPERATURE, labels)
    raise ValueError(mode)


def _make_mlp() -> nn.Module:
    """BatchNorm-free Linear-ReLU-Linear, float64, identical init wherever it is built."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return nn.Sequential(
            nn.Linear(DIM_IN, 16, dtype=torch.float64),
            nn.ReLU(),
            nn.Linear(16, DIM_OUT, dtype=torch.float64),
        )


def _train(model: nn.Module, criterion: InfoNCELoss, x: Tensor) -> list[Tensor]:
    """``TRAIN_STEPS`` SGD-momentum steps on fixed two views ``x`` (2, n, D_in); step losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad(set_to_none=True)
        num_views, num_samples, _ = x.shape
        z = model(x.reshape(num_views * num_samples, DIM_IN)).reshape(num_views, num_samples, -1)
        loss = criterion(z[0], z[1])
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().clone())
    return losses


# --------------------------------------------------------------------------------------------
# the known peer bug, for the negative control
# --------------------------------------------------------------------------------------------


def _exactness_task(rank: int, world: int) -> dict[str, Any]:
    x, weight0 = _fixed_problem()
    criterion = InfoNCELoss(temperature=TEMPERATURE, gather_distributed=True)
    results: dict[str, Any] = {}
    for sizes in PARTITIONS[world]:
        start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        for mode in MODES:
            for gather in ("library", "buggy"):
                weight = weight0.clone().requires_grad_()
                z = x[:, start:stop] @ weight  # (V, n_r, D)
                if gather == "library":
                    loss = _loss(mode, criterion, z, LABELS[start:stop])
                else:
                    with gather_replaced_by(gather_without_grad):
                        loss = _loss(mode, criterion, z, LABELS[start:stop])
                loss.backward()
                assert weight.grad is not None
                results[f"{sizes}/{mode}/{gather}"] = {
                    "loss": loss.detach().clone(),
                    "mean_loss": mean_over_ranks(loss),
                    "grad": mean_over_ranks(weight.grad),
                }
    return results


def _training_task(rank: int, world: int) -> dict[str, Any]:
    x, _ = _fixed_problem()
    local = x[:2].chunk(world, dim=1)[rank]  # (2, N / R, D_in): this rank's half of the batch
    results: dict[str, Any] = {}
    for gather in (True, False):
        model = nn.parallel.DistributedDataParallel(_make_mlp())
        criterion = InfoNCELoss(temperature=TEMPERATURE, gather_distributed=gather)
        losses = _train(model, criterion, local)
        results[f"gather={gather}"] = {
            "mean_losses": [mean_over_ranks(loss) for loss in losses],
            "params": [p.detach().clone() for p in model.module.parameters()],
        }
    return results


_TASKS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "exactness": _exactness_task,
    "training": _training_task,
}


def _launch(task: str, world: int, workdir: Path) -> list[dict[str, Any]]:
    """Run ``task`` on ``world`` spawned gloo ranks; their results in rank order."""
    return launch(_TASKS[task], world, workdir)


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(PARTITIONS), ids=lambda world: f"world{world}")
def exactness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, list[dict[str, Any]]]:
    """One launch per world size, shared by the exactness test and its negative control."""
    world = request.param
    return world, _launch("exactness", world, tmp_path_factory.mktemp(f"exactness{world}"))


def _single_process(mode: str) -> tuple[Tensor, Tensor]:
    """Loss and ``W.grad`` of one process on the concatenated batch."""
    x, weight0 = _fixed_problem()
    weight = weight0.clone().requires_grad_()
    loss = _reference_loss(mode, x @ weight, LABELS)
    loss.backward()
    assert weight.grad is not None
    return loss.detach(), weight.grad


def _assert_matches(mean_loss: Tensor, grad: Tensor, loss: Tensor, expected_grad: Tensor) -> None:
    torch.testing.assert_close(mean_loss, loss, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(grad, expected_grad, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", MODES)
def test_loss_and_weight_grad_match_single_process(
    exactness: tuple[int, list[dict[str, Any]]], mode: str
) -> None:
    world, results = exactness
    loss, expected_grad = _single_process(mode)
    assert expected_grad.abs().max() > 1e-3  # a non-trivial gradient to compare
    for sizes in PARTITIONS[world]:
        for rank in range(world):
            got = results[rank][f"{sizes}/{mode}/library"]
            assert got["grad"].dtype == torch.float64
            _assert_matches(got["mean_loss"], got["grad"], loss, expected_grad)
        per_rank = torch.stack(
            [results[r][f"{sizes}/{mode}/library"]["loss"] for r in range(world)]
        )
        # the per-rank losses are genuinely different pieces; only their mean is the loss
        assert not torch.allclose(per_rank, loss.expand_as(per_rank))


@pytest.mark.parametrize("mode", MODES)
def testgather_without_grad_is_caught(
    exactness: tuple[int, list[dict[str, Any]]], mode: str
) -> None:
    world, results = exactness
    loss, expected_grad = _single_process(mode)
    for sizes in PARTITIONS[world]:
        for rank in range(world):
            got = results[rank][f"{sizes}/{mode}/buggy"]
            # the forward pass is identical, so a loss-only check would not notice ...
            torch.testing.assert_close(got["mean_loss"], loss, rtol=RTOL, atol=ATOL)
            # ... but the cross-rank gradient terms are missing
            assert (got["grad"] - expected_grad).abs().max() > 1e-6
            with pytest.raises(AssertionError):
                _assert_matches(got["mean_loss"], got["grad"], loss, expected_grad)


def test_ddp_training_matches_single_process(tmp_path: Path) -> None:
    world = 2
    results = _launch("training", world, tmp_path)

    x, _ = _fixed_problem()
    model = _make_mlp()
    initial = [p.detach().clone() for p in model.parameters()]
    expected_losses = _train(model, InfoNCELoss(temperature=TEMPERATURE), x[:2])
    expected = [p.detach() for p in model.parameters()]
    assert expected_losses[-1] < expected_losses[0]  # it actually trains ...
    moved = max((e - i).abs().max().item() for e, i in zip(expected, initial, strict=True))
    assert moved > 1e-2  # ... so equal final weights are not trivially equal initial weights

    for rank in range(world):
        exact = results[rank]["gather=True"]
        for got_loss, expected_loss in zip(exact["mean_losses"], expected_losses, strict=True):
            torch.testing.assert_close(got_loss, expected_loss, rtol=RTOL, atol=ATOL)
        for got, want in zip(exact["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)

        # negative control: local-only negatives train to measurably different weights
        local_only = results[rank]["gather=False"]["params"]
        gap = max((g - e).abs().max().item() for g, e in zip(local_only, expected, strict=True))
        assert gap > 1e-4
