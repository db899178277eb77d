"""The blocked InfoNCE equals the dense one: values and gradients, float64, every form."""

from __future__ import annotations

import pytest
import torch

from contrastive.losses import InfoNCELoss, contrastive_loss, info_nce, multi_view_info_nce
from contrastive.losses.blocked import (
    AUTO_BLOCK_MAX_BYTES,
    AUTO_BLOCK_ROWS,
    resolve_block_size,
)


def values_and_grads(loss_fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # type: ignore[no-untyped-def]
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]  # type: ignore[misc]


def assert_same(dense: tuple, blocked: tuple) -> None:  # type: ignore[type-arg]
    torch.testing.assert_close(blocked[0], dense[0], rtol=1e-9, atol=1e-12)
    for a, b in zip(dense[1], blocked[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block_size", [1, 7, 16, 63])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_two_view_info_nce(block_size: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(block_size)
    z_a, z_b = torch.randn(2, 40, 16, dtype=torch.float64, generator=generator)
    dense = values_and_grads(lambda a, b: info_nce(a, b, temperature), z_a, z_b)
    blocked = values_and_grads(lambda a, b: info_nce(a, b, temperature, block_size), z_a, z_b)
    assert_same(dense, blocked)


@pytest.mark.parametrize("block_size", [5, 32])
def test_multi_view_and_supervised_multi_positive(block_size: int) -> None:
    generator = torch.Generator().manual_seed(1)
    views = torch.randn(3, 24, 8, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 5, (24,), generator=generator)  # several positives per anchor
    for lab in (None, labels):
        dense = values_and_grads(lambda v, lab=lab: multi_view_info_nce(v, 0.1, lab), views)
        blocked = values_and_grads(
            lambda v, lab=lab: multi_view_info_nce(v, 0.1, lab, block_size), views
        )
        assert_same(dense, blocked)


def test_the_cross_rank_form_with_offsets_and_anchors_without_positives() -> None:
    """Anchors are one rank's rows of a gathered candidate set (self at an offset), some
    anchors have no positive and one is not among the candidates at all (self_index -1)."""
    generator = torch.Generator().manual_seed(2)
    candidates = torch.randn(30, 8, dtype=torch.float64, generator=generator)
    anchors = torch.randn(12, 8, dtype=torch.float64, generator=generator)
    candidate_labels = torch.randint(0, 6, (30,), generator=generator)
    anchor_labels = torch.cat([candidate_labels[10:21], torch.tensor([99])])  # last: no positive
    self_index = torch.cat([torch.arange(10, 21), torch.tensor([-1])])

    def loss(block: int | None):  # type: ignore[no-untyped-def]
        return lambda a, c: contrastive_loss(
            a, c, anchor_labels, candidate_labels, self_index, 0.2, block
        )

    assert_same(
        values_and_grads(loss(None), anchors, candidates),
        values_and_grads(loss(5), anchors, candidates),
    )


def test_module_and_bad_block_size() -> None:
    z = torch.randn(2, 16, 8, dtype=torch.float64)
    dense, blocked = InfoNCELoss(0.1), InfoNCELoss(0.1, block_size=4)
    torch.testing.assert_close(blocked(z[0], z[1]), dense(z[0], z[1]), rtol=1e-9, atol=0)
    assert "block_size=4" in repr(blocked)
    for bad in (0, -3, "atuo", 2.5, True):
        with pytest.raises(ValueError, match=r"block_size must be 'auto', null .* or an integer"):
            InfoNCELoss(0.1, block_size=bad)  # type: ignore[arg-type]


def test_auto_picks_dense_below_the_measured_threshold_and_blocks_above() -> None:
    assert resolve_block_size("auto", 512, 512) is None  # 2N = 512: dense (as fast)
    assert resolve_block_size("auto", 1024, 1024) == AUTO_BLOCK_ROWS  # 2N = 1024: blocked
    assert resolve_block_size("auto", 131072, 131072) == AUTO_BLOCK_ROWS
    # a huge candidate set shrinks the block so its buffer stays within the budget
    rows = resolve_block_size("auto", 4096, 2**21)
    assert rows is not None and rows * 2**21 * 4 <= AUTO_BLOCK_MAX_BYTES
    assert resolve_block_size("auto", 4096, 2**21, itemsize=8) == rows // 2
    # forced either way
    assert resolve_block_size(None, 10**5, 10**5) is None
    assert resolve_block_size(7, 64, 64) == 7
    assert resolve_block_size(64, 64, 64) is None  # one block is the dense path


def test_blocked_keeps_no_similarity_matrix_for_backward() -> None:
    """What autograd keeps between forward and backward: the dense path keeps (2N x 2N)
    tensors; the blocked one only the embeddings and per-row numbers (2N = 4096, d = 32)."""
    z_a, z_b = torch.randn(2, 2048, 32)

    def saved_bytes(block: int | str | None) -> int:
        total = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        a, b = z_a.clone().requires_grad_(True), z_b.clone().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = info_nce(a, b, 0.1, block)
        loss.backward()
        return total

    matrix_bytes = 4096 * 4096 * 4
    assert saved_bytes(None) >= matrix_bytes  # the dense path does keep the matrix
    assert saved_bytes(256) < 4096 * 32 * 4 * 16  # copies of the embeddings, 1/8 of the matrix
    assert saved_bytes("auto") < 4096 * 32 * 4 * 16  # "auto" (the default) blocks at 2N = 4096


# --------------------------------------------------------------------------------------------
# decoupled (DCL) and weighted positives: the blocked autograd function equals the dense path
# --------------------------------------------------------------------------------------------


def _general_problem(seed: int) -> tuple[torch.Tensor, ...]:
    """One rank's anchors against gathered candidates: several positives per anchor, self at an
    offset, an anchor with no positive (label 99), one not among the candidates (self -1)."""
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randn(30, 8, dtype=torch.float64, generator=generator)
    anchors = torch.randn(12, 8, dtype=torch.float64, generator=generator)
    candidate_labels = torch.randint(0, 6, (30,), generator=generator)
    anchor_labels = torch.cat([candidate_labels[10:21], torch.tensor([99])])
    self_index = torch.cat([torch.arange(10, 21), torch.tensor([-1])])
    weights = torch.rand(12, dtype=torch.float64, generator=generator) * 2
    return anchors, candidates, anchor_labels, candidate_labels, self_index, weights


def _core(  # type: ignore[no-untyped-def]
    problem: tuple[torch.Tensor, ...], block: int | None, decoupled: bool, weighted: bool
):
    _, _, anchor_labels, candidate_labels, self_index, weights = problem
    return lambda a, c: contrastive_loss(
        a,
        c,
        anchor_labels,
        candidate_labels,
        self_index,
        0.2,
        block,
        decoupled=decoupled,
        positive_weights=weights if weighted else None,
    )


@pytest.mark.parametrize("block_size", [1, 5, 11])
@pytest.mark.parametrize(("decoupled", "weighted"), [(True, False), (False, True), (True, True)])
def test_decoupled_and_weighted_blocked_equals_dense(
    block_size: int, decoupled: bool, weighted: bool
) -> None:
    problem = _general_problem(block_size)
    inputs = problem[:2]
    dense = values_and_grads(_core(problem, None, decoupled, weighted), *inputs)
    blocked = values_and_grads(_core(problem, block_size, decoupled, weighted), *inputs)
    assert_same(dense, blocked)
    # negative controls: the option really changes value and gradients, so the comparison
    # above would catch a blocked path that ignored it
    other = values_and_grads(_core(problem, block_size, not decoupled, weighted), *inputs)
    with pytest.raises(AssertionError):
        assert_same(dense, other)
    unweighted = values_and_grads(_core(problem, block_size, decoupled, not weighted), *inputs)
    with pytest.raises(AssertionError):
        assert_same(dense, unweighted)


@pytest.mark.parametrize("block_size", [3, 16])
def test_decoupled_two_view_and_multi_view_forms(block_size: int) -> None:
    generator = torch.Generator().manual_seed(3)
    views = torch.randn(3, 20, 8, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 4, (20,), generator=generator)
    weights = torch.rand(60, dtype=torch.float64, generator=generator) + 0.5
    for num_views, lab in ((2, None), (3, None), (3, labels), (1, labels)):
        sample_labels = torch.arange(20) if lab is None else lab
        embedding_labels = sample_labels.repeat(num_views)  # (V N,)

        def loss(block: int | None, num_views=num_views, embedding_labels=embedding_labels):  # type: ignore[no-untyped-def]
            return lambda v: contrastive_loss(
                v[:num_views].reshape(-1, 8),
                v[:num_views].reshape(-1, 8),
                embedding_labels,
                embedding_labels,
                torch.arange(20 * num_views),
                0.1,
                block,
                decoupled=True,
                positive_weights=weights[: 20 * num_views],
            )

        assert_same(values_and_grads(loss(None), views), values_and_grads(loss(block_size), views))


def test_decoupled_anchor_without_negatives_is_finite_and_matches() -> None:
    """All candidates share the anchors' label: the decoupled denominator is empty, its
    log-sum-exp is 0 (no gradient from it) on both paths, instead of -inf or a huge number."""
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # label 2: a lone anchor (no positive, excluded)
    candidate_labels = torch.zeros(6, dtype=torch.long)  # anchors 0-2: positives only

    def loss(block: int | None):  # type: ignore[no-untyped-def]
        return lambda a, c: contrastive_loss(
            a, c, labels, candidate_labels, torch.arange(6), 0.3, block, decoupled=True
        )

    dense = values_and_grads(loss(None), embeddings, embeddings.clone())
    assert_same(dense, values_and_grads(loss(2), embeddings, embeddings.clone()))
    assert torch.isfinite(dense[0]) and all(torch.isfinite(g).all() for g in dense[1])
    # the value is then the positive term alone: -(1/|P|) sum_p s_ip / T over anchors 0-2
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    similarities = unit[:3] @ unit.T / 0.3  # (3, 6)
    expected = torch.stack(
        [-(similarities[i].sum() - similarities[i, i]) / 5 for i in range(3)]
    ).mean()
    torch.testing.assert_close(dense[0], expected, rtol=1e-12, atol=1e-12)


def test_positive_weights_are_constants_and_shape_checked() -> None:
    problem = _general_problem(5)
    anchors, candidates, anchor_labels, candidate_labels, self_index, weights = problem
    for block in (None, 4):
        live = weights.clone().requires_grad_(True)
        loss = contrastive_loss(
            anchors,
            candidates.requires_grad_(True),
            anchor_labels,
            candidate_labels,
            self_index,
            0.2,
            block,
            positive_weights=live,
        )
        loss.backward()
        assert live.grad is None  # detached inside
    with pytest.raises(ValueError, match=r"positive_weights must be None or have shape \(12,\)"):
        contrastive_loss(
            anchors,
            candidates,
            anchor_labels,
            candidate_labels,
            self_index,
            positive_weights=torch.ones(11),
        )
