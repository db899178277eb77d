"""``moco_loss`` against an independent float64 loop reference and against lightly.

lightly 1.6 has a direct equivalent: ``NTXentLoss(temperature, memory_bank_size=(K, D))``
(``lightly/loss/ntx_ent_loss.py``). With a memory bank it computes, for normalised ``out0``
(queries) and ``out1`` (keys), ``cross_entropy([out0_n . out1_n, out0_n . bank_j] / T, 0)``
averaged over ``n``: MoCo's InfoNCE, the other keys of the batch not among the negatives. Its
bank (a ``(K, D)`` buffer, ``memory_bank.bank``) is *not* normalised by the loss and is
updated after use, so the test sets it explicitly to the normalised queue before the call.
Its keys are not detached; the gradient is compared for the queries. lightly has no
decoupled form, and ``memory_bank_size=0`` switches it to in-batch NT-Xent, so neither the
decoupled loss nor the empty queue is compared with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.losses import moco_loss

RTOL, ATOL = 1e-9, 1e-12  # float64


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def reference_moco(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float,
    decoupled: bool = False,
    batch_negatives: bool = False,
) -> Tensor:
    """MoCo's loss written out per query; ``batch_negatives`` (a wrong variant, for the
    negative control) also counts the other keys of the batch as negatives."""
    keys_units = [_unit(k).detach() for k in keys]
    queue_units = [_unit(u).detach() for u in queue]
    total = torch.zeros((), dtype=torch.float64)
    for n, query in enumerate(queries):
        q = _unit(query)
        positive = q @ keys_units[n] / temperature
        negatives = [q @ u / temperature for u in queue_units]
        if batch_negatives:
            negatives += [q @ k / temperature for m, k in enumerate(keys_units) if m != n]
        terms = negatives if decoupled else [positive, *negatives]
        log_sum = torch.log(torch.stack([torch.exp(t) for t in terms]).sum()) if terms else 0.0
        total = total - positive + log_sum
    return total / len(queries)


def _problem(num: int, size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    queries, keys = torch.randn(2, num, 5, generator=generator, dtype=torch.float64)
    queue = torch.randn(size, 5, generator=generator, dtype=torch.float64)
    return queries.requires_grad_(), keys.requires_grad_(), queue.requires_grad_()


def _value_and_grad(loss: Tensor, leaf: Tensor) -> list[Tensor]:
    return [loss.detach(), *torch.autograd.grad(loss, [leaf])]


def _assert_same(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("num", "size"), [(1, 3), (4, 1), (6, 16)])
@pytest.mark.parametrize("temperature", [0.07, 0.2])
@pytest.mark.parametrize("decoupled", [False, True])
def test_matches_loop_reference(num: int, size: int, temperature: float, decoupled: bool) -> None:
    queries, keys, queue = _problem(num, size, seed=num + size)
    actual = _value_and_grad(moco_loss(queries, keys, queue, temperature, decoupled), queries)
    expected = _value_and_grad(
        reference_moco(queries, keys, queue, temperature, decoupled), queries
    )
    _assert_same(actual, expected)
    # negative controls: the other choice of denominator, and in-batch keys as negatives
    with pytest.raises(AssertionError):
        other = reference_moco(queries, keys, queue, temperature, not decoupled)
        _assert_same(actual, _value_and_grad(other, queries))
    if num > 1:
        with pytest.raises(AssertionError):
            wrong = reference_moco(queries, keys, queue, temperature, decoupled, True)
            _assert_same(actual, _value_and_grad(wrong, queries))


def test_keys_and_queue_get_no_gradient() -> None:
    queries, keys, queue = _problem(4, 8, seed=1)
    moco_loss(queries, keys, queue).backward()
    assert queries.grad is not None and torch.isfinite(queries.grad).all()
    assert keys.grad is None and queue.grad is None


def test_empty_queue() -> None:
    queries, keys, _ = _problem(5, 0, seed=2)
    empty = torch.zeros(0, 5, dtype=torch.float64)
    loss = moco_loss(queries, keys, empty)
    (grad,) = torch.autograd.grad(loss, [queries])
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    decoupled = _value_and_grad(moco_loss(queries, keys, empty, 0.2, decoupled=True), queries)
    expected = -F.cosine_similarity(queries, keys.detach()).mean() / 0.2
    _assert_same(decoupled, _value_and_grad(expected, queries))
    _assert_same(
        decoupled, _value_and_grad(reference_moco(queries, keys, empty, 0.2, True), queries)
    )


def test_precision() -> None:
    queries, keys, queue = (t.detach().float() for t in _problem(8, 32, seed=3))
    for dtype in (torch.float16, torch.bfloat16):
        loss = moco_loss(queries.to(dtype), keys.to(dtype), queue.to(dtype), 0.2)
        assert loss.dtype == torch.float32
        expected = moco_loss(
            queries.to(dtype).float(), keys.to(dtype).float(), queue.to(dtype).float()
        )
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = moco_loss(queries, keys, queue, 0.2)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, moco_loss(queries, keys, queue, 0.2), rtol=1e-6, atol=1e-6)
    # float64 in, float64 out
    assert moco_loss(*_problem(2, 3, seed=4)).dtype == torch.float64


def test_validation() -> None:
    q = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"queries and keys .* got \(4, 3\) and \(4, 2\)"):
        moco_loss(q, torch.randn(4, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"non-empty"):
        moco_loss(torch.randn(0, 3), torch.randn(0, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"queue must be a \(K, 3\) tensor .* got shape \(5, 2\)"):
        moco_loss(q, q, torch.randn(5, 2))
    with pytest.raises(ValueError, match="temperature"):
        moco_loss(q, q, torch.randn(5, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="decoupled must be true or false"):
        moco_loss(q, q, torch.randn(5, 3), decoupled=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(("num", "size"), [(4, 8), (16, 64)])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_equals_lightly_ntxent_with_memory_bank(num: int, size: int, temperature: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    queries, keys, queue = _problem(num, size, seed=size)
    ours = _value_and_grad(moco_loss(queries, keys, queue, temperature), queries)

    def lightly_value(queue_for_bank: Tensor) -> list[Tensor]:
        criterion = lightly_loss.NTXentLoss(temperature=temperature, memory_bank_size=(size, 5))
        criterion.memory_bank.bank = F.normalize(queue_for_bank.detach(), dim=1).clone()
        return _value_and_grad(criterion(queries, keys.detach()), queries)

    _assert_same(ours, lightly_value(queue))
    # negative control: another queue in lightly's bank gives another loss
    with pytest.raises(AssertionError):
        _assert_same(ours, lightly_value(queue.flip(0)[:, [1, 0, 2, 3, 4]]))
