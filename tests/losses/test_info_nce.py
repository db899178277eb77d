"""Tests of the InfoNCE / NT-Xent / SupCon losses against independent float64 loop references."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from contrastive import distributed
from contrastive.losses import (
    InfoNCELoss,
    contrastive_loss,
    info_nce,
    multi_view_info_nce,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons


# --------------------------------------------------------------------------------------------
# Independent references: explicit python loops over anchors, float64, nothing shared with the
# implementation except torch scalar arithmetic (so they are differentiable with autograd).
# --------------------------------------------------------------------------------------------


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def _log_ratio(
    similarities: Sequence[Tensor], positive: int, others: Sequence[int], temperature: float
) -> Tensor:
    """log( exp(s_p / T) / sum_{k in others} exp(s_k / T) ), shifted by max_k s_k to avoid overflow."""
    shift = max(similarities[k].detach().item() for k in others)
    denominator = torch.stack(
        [torch.exp((similarities[k] - shift) / temperature) for k in others]
    ).sum()
    return (similarities[positive] - shift) / temperature - torch.log(denominator)


def reference_nt_xent(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """SimCLR NT-Xent written out: 2N anchors, positive = other view, self excluded."""
    embeddings = [_unit(v) for v in list(z_a) + list(z_b)]
    count = len(embeddings)
    half = count // 2
    total = torch.zeros((), dtype=torch.float64)
    for i in range(count):
        similarities = [embeddings[i] @ embeddings[k] for k in range(count)]
        others = [k for k in range(count) if k != i]
        total = total - _log_ratio(similarities, (i + half) % count, others, temperature)
    return total / count


def reference_supcon(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Sequence[int],
    candidate_labels: Sequence[int],
    self_index: Sequence[int],
    temperature: float,
) -> Tensor:
    """SupCon L_out written out; anchors without positives are skipped."""
    anchor_units = [_unit(v) for v in anchors]
    candidate_units = [_unit(v) for v in candidates]
    total = torch.zeros((), dtype=torch.float64)
    num_valid = 0
    for i, anchor in enumerate(anchor_units):
        similarities = [anchor @ candidate for candidate in candidate_units]
        others = [k for k in range(len(candidate_units)) if k != self_index[i]]
        positives = [k for k in others if candidate_labels[k] == anchor_labels[i]]
        if not positives:
            continue
        terms = [_log_ratio(similarities, p, others, temperature) for p in positives]
        total = total - sum(terms) / len(positives)
        num_valid += 1
    return total / max(num_valid, 1)


def _leaves(
    *shapes: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=generator, dtype=dtype).requires_grad_() for shape in shapes
    ]


def _value_and_grads(
    loss_fn: Callable[..., Tensor], inputs: Sequence[Tensor]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    loss = loss_fn(*inputs)
    grads = torch.autograd.grad(loss, list(inputs))
    return loss.detach(), grads


def _assert_same_value_and_grads(
    actual_fn: Callable[..., Tensor],
    expected_fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    rtol: float = RTOL,
    atol: float = ATOL,
) -> None:
    actual, actual_grads = _value_and_grads(actual_fn, inputs)
    expected, expected_grads = _value_and_grads(expected_fn, inputs)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    for actual_grad, expected_grad in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# info_nce
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [1, 2, 5])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_info_nce_matches_loop_reference(num_samples: int, temperature: float) -> None:
    inputs = _leaves((num_samples, 4), (num_samples, 4), seed=num_samples)
    _assert_same_value_and_grads(
        lambda a, b: info_nce(a, b, temperature),
        lambda a, b: reference_nt_xent(a, b, temperature),
        inputs,
    )


def test_info_nce_gradcheck() -> None:
    inputs = _leaves((3, 4), (3, 4), seed=1)
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, 0.3), inputs)
    assert torch.autograd.gradgradcheck(lambda a, b: info_nce(a, b, 0.3), inputs)


@pytest.mark.parametrize("num_samples", [1, 3, 16])
def test_collinear_embeddings_give_log_2n_minus_1(num_samples: int) -> None:
    direction = torch.randn(8, dtype=torch.float64)
    scales = torch.rand(2 * num_samples, 1, dtype=torch.float64) + 0.1  # positive multiples
    embeddings = scales * direction  # (2N, D)
    z_a, z_b = embeddings[:num_samples], embeddings[num_samples:]
    expected = math.log(2 * num_samples - 1)
    assert info_nce(z_a, z_b, 0.1).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert info_nce(z_a.float(), z_b.float(), 0.1).item() == pytest.approx(expected, abs=1e-5)


def test_zero_vectors_give_finite_loss_and_grads() -> None:
    z_a = torch.zeros(4, 8, requires_grad=True)
    z_b = torch.randn(4, 8, requires_grad=True)
    loss = info_nce(z_a, z_b)
    loss.backward()
    assert torch.isfinite(loss)
    assert z_a.grad is not None and z_b.grad is not None
    assert torch.isfinite(z_a.grad).all() and torch.isfinite(z_b.grad).all()
    # all-zero batch: every similarity is 0, so every term is log(2N - 1)
    zeros = torch.zeros(4, 8)
    assert info_nce(zeros, zeros).item() == pytest.approx(math.log(7), abs=1e-6)


def test_tiny_temperature_is_finite_and_accurate() -> None:
    temperature = 1e-3
    z_a64, z_b64 = _leaves((8, 16), (8, 16), seed=3)
    expected = reference_nt_xent(z_a64, z_b64, temperature)
    assert expected.item() > 10  # really in the large-logit regime
    z_a = z_a64.detach().float().requires_grad_()
    z_b = z_b64.detach().float().requires_grad_()
    loss = info_nce(z_a, z_b, temperature)
    loss.backward()
    assert torch.isfinite(loss)
    assert z_a.grad is not None and torch.isfinite(z_a.grad).all()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # float64 path against the reference, values and grads
    _assert_same_value_and_grads(
        lambda a, b: info_nce(a, b, temperature),
        lambda a, b: reference_nt_xent(a, b, temperature),
        [z_a64, z_b64],
        rtol=1e-9,
        atol=1e-9,
    )


def test_bf16_autocast_computes_in_float32() -> None:
    torch.manual_seed(0)
    projector = torch.nn.Linear(32, 16)
    inputs_a, inputs_b = torch.randn(16, 32), torch.randn(16, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_a, z_b = projector(inputs_a), projector(inputs_b)
        assert z_a.dtype == torch.bfloat16
        loss = info_nce(z_a, z_b, 0.1)
    assert loss.dtype == torch.float32
    # bit-for-bit what float32 maths gives on the same bf16-rounded embeddings: a bf16 matmul
    # or logsumexp would be off by ~1e-2 relative
    expected = info_nce(z_a.detach().float(), z_b.detach().float(), 0.1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    # and close to the all-float32 loss
    full_precision = info_nce(projector(inputs_a), projector(inputs_b), 0.1)
    assert loss.item() == pytest.approx(full_precision.item(), rel=2e-2)
    loss.backward()
    assert projector.weight.grad is not None
    assert torch.isfinite(projector.weight.grad).all()


@pytest.mark.parametrize("temperature", [0.1, 1e-3])
def test_fp16_inputs_compute_in_float32(temperature: float) -> None:
    z_a, z_b = torch.randn(16, 32), torch.randn(16, 32)
    half_a = z_a.half().requires_grad_()
    half_b = z_b.half().requires_grad_()
    loss = info_nce(half_a, half_b, temperature)
    assert loss.dtype == torch.float32
    expected = info_nce(half_a.detach().float(), half_b.detach().float(), temperature)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    assert loss.item() == pytest.approx(info_nce(z_a, z_b, temperature).item(), rel=1e-2)
    loss.backward()
    assert half_a.grad is not None and half_a.grad.dtype == torch.float16
    assert torch.isfinite(half_a.grad).all()


def test_info_nce_is_symmetric_and_scale_invariant() -> None:
    z_a, z_b = _leaves((6, 5), (6, 5), seed=4)
    loss = info_nce(z_a, z_b, 0.2)
    torch.testing.assert_close(info_nce(z_b, z_a, 0.2), loss, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(info_nce(3.0 * z_a, 0.25 * z_b, 0.2), loss, rtol=RTOL, atol=ATOL)


def test_info_nce_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\(4, 8\) and \(4, 7\)"):
        info_nce(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError, match="non-empty"):
        info_nce(torch.randn(0, 8), torch.randn(0, 8))


# --------------------------------------------------------------------------------------------
# multi-view / SupCon / general core
# --------------------------------------------------------------------------------------------


def test_multi_view_with_two_views_equals_info_nce() -> None:
    z_a, z_b = _leaves((5, 4), (5, 4), seed=5)
    _assert_same_value_and_grads(
        lambda a, b: multi_view_info_nce(torch.stack([a, b]), 0.3),
        lambda a, b: info_nce(a, b, 0.3),
        [z_a, z_b],
    )


def _supcon_reference_of_views(
    views: Tensor, sample_labels: Sequence[int], temperature: float
) -> Tensor:
    num_views, num_samples, dim = views.shape
    embeddings = views.reshape(num_views * num_samples, dim)
    labels = list(sample_labels) * num_views
    return reference_supcon(embeddings, embeddings, labels, labels, range(len(labels)), temperature)


def test_multi_view_instance_discrimination_matches_reference() -> None:
    (views,) = _leaves((3, 4, 5), seed=6)
    _assert_same_value_and_grads(
        lambda v: multi_view_info_nce(v, 0.2),
        lambda v: _supcon_reference_of_views(v, range(4), 0.2),
        [views],
    )


@pytest.mark.parametrize("num_views", [1, 2, 3])
def test_supcon_matches_reference(num_views: int) -> None:
    # class 7 has a single sample: with one view its anchor has no positive and is excluded
    sample_labels = [0, 1, 0, 2, 1, 7, 2, 0]
    labels = torch.tensor(sample_labels)
    (views,) = _leaves((num_views, len(sample_labels), 6), seed=7)
    _assert_same_value_and_grads(
        lambda v: multi_view_info_nce(v, 0.25, labels=labels),
        lambda v: _supcon_reference_of_views(v, sample_labels, 0.25),
        [views],
    )


def test_supcon_with_distinct_labels_equals_instance_version() -> None:
    (views,) = _leaves((3, 6, 4), seed=8)
    labels = torch.tensor([10, 3, 7, 0, 22, 5])
    torch.testing.assert_close(
        multi_view_info_nce(views, 0.1, labels=labels),
        multi_view_info_nce(views, 0.1),
        rtol=RTOL,
        atol=ATOL,
    )


def test_contrastive_loss_on_concatenation_equals_info_nce() -> None:
    z_a, z_b = _leaves((5, 3), (5, 3), seed=9)

    def via_core(a: Tensor, b: Tensor) -> Tensor:
        embeddings = torch.cat([a, b])  # (2N, D)
        labels = torch.arange(5).repeat(2)
        return contrastive_loss(embeddings, embeddings, labels, labels, torch.arange(10), 0.4)

    _assert_same_value_and_grads(via_core, lambda a, b: info_nce(a, b, 0.4), [z_a, z_b])


def test_contrastive_loss_general_anchors_match_reference() -> None:
    anchors, candidates = _leaves((4, 5), (9, 5), seed=10)
    anchor_labels = [0, 1, 2, 5]  # label 5 has no candidate: anchor excluded
    candidate_labels = [0, 1, 2, 0, 1, 2, 0, 3, 1]
    self_index = [0, 4, 8, 2]  # anchor 1 "is" candidate 4, anchor 2 is candidate 8 (label 1)

    def actual(a: Tensor, c: Tensor) -> Tensor:
        return contrastive_loss(
            a,
            c,
            torch.tensor(anchor_labels),
            torch.tensor(candidate_labels),
            torch.tensor(self_index),
            0.3,
        )

    _assert_same_value_and_grads(
        actual,
        lambda a, c: reference_supcon(a, c, anchor_labels, candidate_labels, self_index, 0.3),
        [anchors, candidates],
    )


def test_self_index_out_of_range_excludes_nothing() -> None:
    """With self_index = -1 and z_b as candidates, it is the one-directional (CPC/CLIP) InfoNCE."""
    z_a, z_b = _leaves((6, 4), (6, 4), seed=11)
    labels = torch.arange(6)

    def expected(a: Tensor, b: Tensor) -> Tensor:
        logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.2  # (N, N)
        return F.cross_entropy(logits, labels)

    _assert_same_value_and_grads(
        lambda a, b: contrastive_loss(a, b, labels, labels, torch.full((6,), -1), 0.2),
        expected,
        [z_a, z_b],
    )


def test_no_positives_at_all_gives_zero_with_defined_grads() -> None:
    (embeddings,) = _leaves((4, 3), seed=12)
    labels = torch.arange(4)
    loss = contrastive_loss(embeddings, embeddings, labels, labels, torch.arange(4), 0.1)
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, [embeddings])
    assert torch.equal(grad, torch.zeros_like(grad))
    # a single anchor whose only candidate is itself: still finite, zero gradient
    (single,) = _leaves((1, 3), seed=13)
    loss = contrastive_loss(
        single, single, torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long), 0.1
    )
    (grad,) = torch.autograd.grad(loss, [single])
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_multi_view_and_core_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"\(V, N, D\), got \(4, 8\)"):
        multi_view_info_nce(torch.randn(4, 8))
    with pytest.raises(ValueError, match="at least 2 views"):
        multi_view_info_nce(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        multi_view_info_nce(torch.randn(2, 4, 8), labels=torch.arange(5))
    with pytest.raises(ValueError, match="self_index"):
        contrastive_loss(
            torch.randn(3, 2), torch.randn(5, 2), torch.zeros(3), torch.zeros(5), torch.arange(2)
        )
    with pytest.raises(ValueError, match="candidate_labels"):
        contrastive_loss(
            torch.randn(3, 2), torch.randn(5, 2), torch.zeros(3), torch.zeros(4), torch.arange(3)
        )
    with pytest.raises(ValueError, match="same embedding size"):
        contrastive_loss(
            torch.randn(3, 2), torch.randn(5, 3), torch.zeros(3), torch.zeros(5), torch.arange(3)
        )


# --------------------------------------------------------------------------------------------
# Cross-rank maths, simulated without processes
# --------------------------------------------------------------------------------------------


def test_simulated_cross_rank_loss_and_gradients_match_global() -> None:
    """Rank r: anchors = its local [z_a_r; z_b_r], candidates = all ranks' embeddings in rank order.

    The mean over ranks of the per-rank losses must equal the global loss, and the sum over ranks
    of the gradients of L_r / R (what all_gather's backward + DDP averaging computes) must equal
    the global gradient.
    """
    num_ranks, per_rank, temperature = 4, 3, 0.2
    z_a, z_b = _leaves((num_ranks * per_rank, 5), (num_ranks * per_rank, 5), seed=14)
    local_blocks = [
        torch.cat([z_a[r * per_rank : (r + 1) * per_rank], z_b[r * per_rank : (r + 1) * per_rank]])
        for r in range(num_ranks)
    ]  # each (2 n, D)
    local_labels = [
        r * per_rank + torch.arange(per_rank).repeat(2) for r in range(num_ranks)
    ]  # globally unique
    candidates = torch.cat(local_blocks)  # (2 N, D), rank-major
    candidate_labels = torch.cat(local_labels)  # (2 N,)

    rank_losses = []
    summed_grads = [torch.zeros_like(z_a), torch.zeros_like(z_b)]
    for r in range(num_ranks):
        self_index = 2 * per_rank * r + torch.arange(2 * per_rank)  # (2 n,)
        loss = contrastive_loss(
            local_blocks[r], candidates, local_labels[r], candidate_labels, self_index, temperature
        )
        rank_losses.append(loss.detach())
        for total, grad in zip(
            summed_grads, torch.autograd.grad(loss / num_ranks, [z_a, z_b]), strict=True
        ):
            total += grad

    expected, expected_grads = _value_and_grads(
        lambda a, b: info_nce(a, b, temperature), [z_a, z_b]
    )
    torch.testing.assert_close(torch.stack(rank_losses).mean(), expected, rtol=RTOL, atol=ATOL)
    for grad, expected_grad in zip(summed_grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# InfoNCELoss module
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.1, float("nan"), float("inf"), -float("inf")])
def test_info_nce_loss_rejects_bad_temperature(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature") as error:
        InfoNCELoss(temperature=bad)
    assert repr(bad) in str(error.value) and "> 0" in str(error.value)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(2, 3), torch.randn(2, 3), temperature=bad)


@pytest.mark.parametrize("bad", ["0.1", None, True])
def test_info_nce_loss_rejects_non_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="temperature") as error:
        InfoNCELoss(temperature=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(error.value)


def test_info_nce_loss_module_matches_functions() -> None:
    criterion = InfoNCELoss(temperature=0.3, gather_distributed=True)  # not initialised: local
    assert "temperature=0.3" in repr(criterion)
    z_a, z_b = _leaves((5, 4), (5, 4), seed=16)
    _assert_same_value_and_grads(criterion, lambda a, b: info_nce(a, b, 0.3), [z_a, z_b])
    (views,) = _leaves((3, 5, 4), seed=17)
    labels = torch.tensor([0, 1, 0, 1, 2])
    torch.testing.assert_close(
        criterion.forward_views(views), multi_view_info_nce(views, 0.3), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        criterion.forward_views(views, labels),
        multi_view_info_nce(views, 0.3, labels),
        rtol=RTOL,
        atol=ATOL,
    )


def test_info_nce_loss_gather_path_with_simulated_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs InfoNCELoss's real gather code for each "rank" in turn, with the collectives faked.

    Two passes: the first records what every rank contributes to each collective (still attached
    to the autograd graph), the second replays them with the rank's own fresh tensor in its slot.
    So the gradient of L_r reaches every rank's embeddings, as all_gather's backward does.
    Unequal local batch sizes; the mean of the rank losses and the summed gradients of L_r / R
    (DDP's average) must match the single-process loss on the concatenated batch.
    """
    sizes, num_views, temperature = [2, 5, 3], 3, 0.2
    num_ranks = len(sizes)
    starts = [sum(sizes[:r]) for r in range(num_ranks)]
    (views,) = _leaves((num_views, sum(sizes), 4), seed=18)
    class_labels = torch.tensor([0, 1, 0, 2, 1, 3, 0, 2, 1, 4])  # 3 and 4 are singletons
    criterion = InfoNCELoss(temperature=temperature, gather_distributed=True)

    def run(labels: Tensor | None, with_views: int) -> tuple[Tensor, Tensor]:
        contributions: dict[tuple[str, int], Tensor] = {}
        current = {"rank": 0}

        def gather(kind: str) -> Callable[[Tensor, Sequence[int]], Tensor]:
            def fake(x: Tensor, rank_sizes: Sequence[int]) -> Tensor:
                assert list(rank_sizes) == [with_views * s for s in sizes]
                contributions.setdefault((kind, current["rank"]), x)  # live: grads reach rank r
                parts = [
                    x
                    if r == current["rank"]
                    else contributions.get((kind, r), torch.zeros_like(x[:0]))
                    for r in range(num_ranks)
                ]
                return torch.cat(parts)

            return fake

        monkeypatch.setattr(distributed, "world_size", lambda: num_ranks)
        monkeypatch.setattr(distributed, "rank", lambda: current["rank"])
        monkeypatch.setattr(distributed, "all_gather_sizes", lambda n, device=None: list(sizes))
        monkeypatch.setattr(distributed, "all_gather_with_grad", gather("embeddings"))
        monkeypatch.setattr(distributed, "all_gather", gather("labels"))

        def rank_loss(r: int) -> Tensor:
            current["rank"] = r
            local_views = views[:with_views, starts[r] : starts[r] + sizes[r]]
            local_labels = None if labels is None else labels[starts[r] : starts[r] + sizes[r]]
            return criterion.forward_views(local_views, local_labels)

        for r in range(num_ranks):  # pass 1: record contributions
            rank_loss(r)
        losses, grad = [], torch.zeros_like(views)
        for r in range(num_ranks):  # pass 2: the real thing
            loss = rank_loss(r)
            losses.append(loss.detach())
            grad += torch.autograd.grad(loss / num_ranks, [views])[0]
        monkeypatch.undo()
        return torch.stack(losses), grad

    for labels, with_views in [(None, 3), (None, 2), (class_labels, 3), (class_labels, 1)]:
        losses, grad = run(labels, with_views)
        expected, (expected_grad,) = _value_and_grads(
            lambda v, labels=labels, with_views=with_views: multi_view_info_nce(
                v[:with_views], temperature, labels
            ),
            [views],
        )
        torch.testing.assert_close(losses.mean(), expected, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(grad, expected_grad, rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------------------------
# contrastive.distributed, single process and real gloo process groups
# --------------------------------------------------------------------------------------------


def test_distributed_helpers_without_process_group() -> None:
    assert not distributed.is_distributed()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    assert distributed.all_gather(x) is x
    assert distributed.all_gather_sizes(3) == [3]


@pytest.fixture
def single_process_group(tmp_path: Path) -> Iterator[None]:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("single_process_group")
def test_world_of_one_is_exactly_local() -> None:
    assert distributed.is_distributed() and distributed.world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    z_a, z_b = _leaves((4, 3), (4, 3), seed=19)
    criterion = InfoNCELoss(temperature=0.5, gather_distributed=True)
    torch.testing.assert_close(criterion(z_a, z_b), info_nce(z_a, z_b, 0.5), rtol=RTOL, atol=ATOL)


_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from contrastive import distributed
    from contrastive.losses import InfoNCELoss

    rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    assert distributed.world_size() == world and distributed.rank() == rank
    results = {}
    for sizes in ([4, 4], [6, 3]):
        start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        # raw gather: unequal sizes, gradient = sum over ranks of what each rank's loss sends back
        x = torch.full((sizes[rank], 2), float(rank), dtype=torch.float64, requires_grad=True)
        gathered = distributed.all_gather_with_grad(x)
        (gathered * torch.arange(1, gathered.shape[0] + 1, dtype=torch.float64)[:, None]).sum().backward()
        results[("gather", tuple(sizes))] = (gathered.detach(), x.grad)
        for mode in ("pair", "views", "supcon"):
            torch.manual_seed(0)  # same encoder and data on every rank
            encoder = torch.nn.Linear(6, 4, dtype=torch.float64)
            data = torch.randn(3, sum(sizes), 6, dtype=torch.float64)
            labels = torch.tensor([0, 1, 0, 2, 1, 5, 0, 2, 1], dtype=torch.long)[: sum(sizes)]
            criterion = InfoNCELoss(temperature=0.3, gather_distributed=True)
            views = encoder(data[:, start:stop])
            if mode == "pair":
                loss = criterion(views[0], views[1])
            elif mode == "views":
                loss = criterion.forward_views(views)
            else:
                loss = criterion.forward_views(views[:1], labels[start:stop])
            loss.backward()
            grads = [p.grad.clone() for p in encoder.parameters()]
            for grad in grads:  # what DDP does
                dist.all_reduce(grad)
                grad /= world
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= world
            results[(mode, tuple(sizes))] = (loss.detach(), mean_loss, grads)
    torch.save(results, out)
    dist.destroy_process_group()
    # gloo's threads can abort the interpreter at shutdown (SIGABRT after a clean run);
    # the results are saved, so leave without running interpreter teardown.
    sys.stdout.flush()
    import os
    os._exit(0)
    """
)


@pytest.mark.ddp
def test_gather_with_two_gloo_processes_matches_single_process(tmp_path: Path) -> None:
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    world = 2
    outputs = [tmp_path / f"rank{r}.pt" for r in range(world)]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(r),
                str(world),
                str(tmp_path / "store"),
                str(outputs[r]),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(world)
    ]
    logs = []
    try:
        for process in processes:
            stdout, _ = process.communicate(timeout=120)
            logs.append(stdout.decode())
    finally:
        for process in processes:
            process.kill()
    assert all(p.returncode == 0 for p in processes), "\n".join(logs)
    results = [torch.load(path) for path in outputs]

    for sizes in ([4, 4], [6, 3]):
        total = sum(sizes)
        # raw gather: rows in rank order, each rank's grad = world * its rows' weights
        expected_rows = torch.cat(
            [torch.full((n, 2), float(r), dtype=torch.float64) for r, n in enumerate(sizes)]
        )
        weights = torch.arange(1, total + 1, dtype=torch.float64)[:, None].expand(total, 2)
        for r in range(world):
            gathered, grad = results[r][("gather", tuple(sizes))]
            torch.testing.assert_close(gathered, expected_rows, rtol=RTOL, atol=ATOL)
            start = sum(sizes[:r])
            torch.testing.assert_close(
                grad, world * weights[start : start + sizes[r]], rtol=RTOL, atol=ATOL
            )

        for mode in ("pair", "views", "supcon"):
            torch.manual_seed(0)
            encoder = torch.nn.Linear(6, 4, dtype=torch.float64)
            data = torch.randn(3, total, 6, dtype=torch.float64)
            labels = torch.tensor([0, 1, 0, 2, 1, 5, 0, 2, 1], dtype=torch.long)[:total]
            views = encoder(data)
            if mode == "pair":
                expected = info_nce(views[0], views[1], 0.3)
            elif mode == "views":
                expected = multi_view_info_nce(views, 0.3)
            else:
                expected = multi_view_info_nce(views[:1], 0.3, labels)
            expected.backward()
            expected_grads = [p.grad for p in encoder.parameters()]
            for r in range(world):
                rank_loss, mean_loss, grads = results[r][(mode, tuple(sizes))]
                torch.testing.assert_close(mean_loss, expected.detach(), rtol=RTOL, atol=ATOL)
                for grad, expected_grad in zip(grads, expected_grads, strict=True):
                    torch.testing.assert_close(grad, expected_grad, rtol=RTOL, atol=ATOL)
                if sizes[0] == sizes[1] and mode != "supcon":
                    # equal sizes, every anchor has a positive: the rank loss is its local mean
                    start = sum(sizes[:r])
                    num_views = 2 if mode == "pair" else 3
                    local = views[:num_views, start : start + sizes[r]].reshape(-1, 4)
                    local_labels = torch.arange(start, start + sizes[r]).repeat(num_views)
                    all_labels = torch.arange(total).repeat(num_views)
                    candidates = torch.cat(
                        [
                            views[:num_views, s : s + n].reshape(-1, 4)
                            for s, n in zip([0, sizes[0]], sizes, strict=True)
                        ]
                    )
                    candidate_labels = torch.cat(
                        [
                            all_labels.view(num_views, total)[:, s : s + n].reshape(-1)
                            for s, n in zip([0, sizes[0]], sizes, strict=True)
                        ]
                    )
                    self_index = num_views * start + torch.arange(num_views * sizes[r])
                    local_mean = contrastive_loss(
                        local, candidates, local_labels, candidate_labels, self_index, 0.3
                    )
                    torch.testing.assert_close(rank_loss, local_mean.detach(), rtol=RTOL, atol=ATOL)
