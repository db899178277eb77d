"""DCL / DCLW (``dcl_loss`` and ``InfoNCELoss(decoupled=True, weighting=...)``) against an
independent float64 loop reference and against lightly's ``DCLLoss`` / ``DCLWLoss``.

lightly (``lightly/loss/dcl_loss.py``, 1.6) returns ``0.5 * (loss0 + loss1)``, each direction
the mean over the N anchors of ``-w_n s_n+ / T + logsumexp(negatives)``, i.e. the mean over
all 2N anchors; its vMF weight is ``2 - N * softmax(<out0_n, out1_n> / sigma)`` on the
normalised outputs, the same for both directions. Ours is defined to be that, so the test is
equality (float64, rtol 1e-9), values and gradients.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import pytest
import torch
from torch import Tensor

from contrastive.losses import InfoNCELoss, dcl_loss, info_nce
from contrastive.losses.weighting import von_mises_fisher_weights

RTOL, ATOL = 1e-9, 1e-12  # float64


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def reference_dcl(
    z_a: Tensor, z_b: Tensor, temperature: float, sigma: float | None, detach: bool = True
) -> Tensor:
    """DCL(W) written out with loops: anchor i, positive = other view, negatives = all but
    {i, p(i)}; vMF weights (sigma not None) from the explicit softmax formula."""
    num = z_a.shape[0]
    embeddings = [_unit(v) for v in list(z_a) + list(z_b)]
    weights: list[Tensor | float] = [1.0] * num
    if sigma is not None:
        pair = [embeddings[n] @ embeddings[n + num] for n in range(num)]
        if detach:
            pair = [s.detach() for s in pair]
        exps = [torch.exp(s / sigma) for s in pair]
        total = sum(exps)
        weights = [2 - num * e / total for e in exps]
    loss = torch.zeros((), dtype=torch.float64)
    for i in range(2 * num):
        positive = (i + num) % (2 * num)
        similarities = [embeddings[i] @ embeddings[k] for k in range(2 * num)]
        negatives = [k for k in range(2 * num) if k not in (i, positive)]
        shift = max(similarities[k].detach().item() for k in negatives)
        log_sum = shift / temperature + torch.log(
            torch.stack(
                [torch.exp((similarities[k] - shift) / temperature) for k in negatives]
            ).sum()
        )
        loss = loss - weights[i % num] * similarities[positive] / temperature + log_sum
    return loss / (2 * num)


def _leaves(num: int, dim: int, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(num, dim, generator=generator, dtype=torch.float64).requires_grad_()
        for _ in range(2)
    ]


def _value_and_grads(fn: Callable[..., Tensor], inputs: Sequence[Tensor]) -> list[Tensor]:
    loss = fn(*inputs)
    return [loss.detach(), *torch.autograd.grad(loss, list(inputs))]


def _assert_same(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


def _assert_differs(actual: Sequence[Tensor], expected: Sequence[Tensor]) -> None:
    with pytest.raises(AssertionError):
        _assert_same(actual, expected)


# --------------------------------------------------------------------------------------------
# independent reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num", [2, 3, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("weighting", [None, "vmf"])
def test_dcl_matches_loop_reference(num: int, temperature: float, weighting: str | None) -> None:
    inputs = _leaves(num, 5, seed=num)
    sigma = 0.5 if weighting else None
    actual = _value_and_grads(lambda a, b: dcl_loss(a, b, temperature, weighting), inputs)
    _assert_same(
        actual, _value_and_grads(lambda a, b: reference_dcl(a, b, temperature, sigma), inputs)
    )
    # blocked path too
    blocked = _value_and_grads(
        lambda a, b: dcl_loss(a, b, temperature, weighting, block_size=2), inputs
    )
    _assert_same(blocked, actual)


def test_negative_controls_coupled_unweighted_and_undetached_differ() -> None:
    """The comparisons above can fail: NT-Xent (positive in the denominator), DCL for DCLW,
    and DCLW with differentiated (not detached) weights all give other values or gradients."""
    inputs = _leaves(6, 5, seed=11)
    dcl = _value_and_grads(lambda a, b: dcl_loss(a, b, 0.2), inputs)
    dclw = _value_and_grads(lambda a, b: dcl_loss(a, b, 0.2, "vmf"), inputs)
    _assert_differs(_value_and_grads(lambda a, b: info_nce(a, b, 0.2), inputs), dcl)
    _assert_differs(dcl, dclw)
    live = _value_and_grads(lambda a, b: reference_dcl(a, b, 0.2, 0.5, detach=False), inputs)
    torch.testing.assert_close(live[0], dclw[0], rtol=RTOL, atol=ATOL)  # same value ...
    _assert_differs(live[1:], dclw[1:])  # ... other gradients: the weights must be constants


def test_vmf_weights_formula_and_properties() -> None:
    similarities = torch.tensor([0.9, 0.1, -0.5, 0.3], dtype=torch.float64)
    weights = von_mises_fisher_weights(similarities, sigma=0.25)
    exps = [math.exp(s / 0.25) for s in similarities.tolist()]
    expected = torch.tensor([2 - 4 * e / sum(exps) for e in exps], dtype=torch.float64)
    torch.testing.assert_close(weights, expected, rtol=1e-12, atol=1e-12)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-12)
    # the closer a pair already is, the lower its weight
    assert torch.equal(weights.argsort(), similarities.argsort(descending=True))
    with pytest.raises(ValueError, match=r"similarities must have shape \(N,\)"):
        von_mises_fisher_weights(torch.zeros(2, 2))


def test_single_pair_is_finite() -> None:
    """N = 1: no negatives at all; the empty log-sum-exp is 0 (lightly gives -inf)."""
    z_a, z_b = _leaves(1, 4, seed=3)
    loss = dcl_loss(z_a, z_b, 0.5)
    cosine = torch.nn.functional.cosine_similarity(z_a, z_b).squeeze()
    torch.testing.assert_close(loss, -cosine / 0.5, rtol=RTOL, atol=ATOL)
    loss.backward()
    assert z_a.grad is not None and torch.isfinite(z_a.grad).all()


def test_low_precision_inputs_compute_in_float32() -> None:
    z_a, z_b = torch.randn(2, 8, 16).unbind()
    for dtype in (torch.float16, torch.bfloat16):
        loss = dcl_loss(z_a.to(dtype), z_b.to(dtype), 0.1, "vmf")
        assert loss.dtype == torch.float32
        expected = dcl_loss(z_a.to(dtype).float(), z_b.to(dtype).float(), 0.1, "vmf")
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_validation() -> None:
    z = torch.randn(4, 3)
    for bad in ("VMF", "uniform", ""):
        with pytest.raises(ValueError, match=rf"weighting must be None .* or 'vmf' .*got {bad!r}"):
            dcl_loss(z, z, weighting=bad)
    for sigma in (0, -1.0, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
            dcl_loss(z, z, sigma=sigma)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        dcl_loss(z, z, temperature=0)
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 2\)"):
        dcl_loss(z, torch.randn(4, 2))


# --------------------------------------------------------------------------------------------
# InfoNCELoss(decoupled, weighting, sigma)
# --------------------------------------------------------------------------------------------


def test_module_options_equal_the_function() -> None:
    inputs = _leaves(5, 4, seed=21)
    for weighting in (None, "vmf"):
        criterion = InfoNCELoss(0.3, decoupled=True, weighting=weighting, sigma=0.4)
        _assert_same(
            _value_and_grads(criterion, inputs),
            _value_and_grads(lambda a, b, w=weighting: dcl_loss(a, b, 0.3, w, 0.4), inputs),
        )
        views = torch.stack([x.detach() for x in inputs])
        torch.testing.assert_close(
            criterion.forward_views(views),
            dcl_loss(*views, 0.3, weighting, 0.4),
            rtol=RTOL,
            atol=ATOL,
        )
    # vMF weighting of the coupled loss: only the positive term changes
    weighted = InfoNCELoss(0.3, weighting="vmf")
    _assert_differs(_value_and_grads(weighted, inputs), _value_and_grads(InfoNCELoss(0.3), inputs))
    text = repr(InfoNCELoss(0.3, decoupled=True, weighting="vmf", sigma=0.4))
    assert "decoupled=True" in text and "weighting=vmf" in text and "sigma=0.4" in text


def test_module_decoupled_multi_view_and_supcon() -> None:
    """decoupled applies to forward_views with V views and with labels (positives = all the
    other embeddings of the class, all out of the denominator)."""
    from contrastive.losses import contrastive_loss

    generator = torch.Generator().manual_seed(5)
    views = torch.randn(3, 6, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 3])
    criterion = InfoNCELoss(0.2, decoupled=True)
    for lab in (None, labels):
        sample_labels = torch.arange(6) if lab is None else lab
        embedding_labels = sample_labels.repeat(3)
        flat = views.reshape(18, 4)
        expected = contrastive_loss(
            flat, flat, embedding_labels, embedding_labels, torch.arange(18), 0.2, decoupled=True
        )
        torch.testing.assert_close(
            criterion.forward_views(views, lab), expected, rtol=RTOL, atol=ATOL
        )
        coupled = InfoNCELoss(0.2).forward_views(views, lab)
        assert not torch.allclose(coupled, expected)


def test_module_validation() -> None:
    with pytest.raises(ValueError, match=r"decoupled must be true or false, got 'yes'"):
        InfoNCELoss(decoupled="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"weighting must be None .* got 'cosine'"):
        InfoNCELoss(weighting="cosine")
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 0, got -0.5"):
        InfoNCELoss(sigma=-0.5)
    criterion = InfoNCELoss(weighting="vmf")
    with pytest.raises(ValueError, match=r"needs one positive per anchor: 2 views and no labels"):
        criterion.forward_views(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(2, 4, 5\) with labels"):
        criterion.forward_views(torch.randn(2, 4, 5), torch.arange(4))


# --------------------------------------------------------------------------------------------
# lightly
# --------------------------------------------------------------------------------------------


def _lightly(loss_fn: torch.nn.Module, inputs: Sequence[Tensor]) -> list[Tensor]:
    with warnings.catch_warnings():  # lightly's vMF calls torch.tensor(tensor)
        warnings.simplefilter("ignore", UserWarning)
        return _value_and_grads(loss_fn, inputs)


@pytest.mark.parametrize("num", [2, 7, 32])
@pytest.mark.parametrize(("temperature", "sigma"), [(0.1, 0.5), (0.5, 0.2)])
def test_equals_lightly(num: int, temperature: float, sigma: float) -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    inputs = _leaves(num, 6, seed=100 + num)
    dcl = _value_and_grads(lambda a, b: dcl_loss(a, b, temperature), inputs)
    dclw = _value_and_grads(lambda a, b: dcl_loss(a, b, temperature, "vmf", sigma), inputs)
    theirs_dcl = _lightly(lightly_loss.DCLLoss(temperature=temperature), inputs)
    theirs_dclw = _lightly(lightly_loss.DCLWLoss(temperature=temperature, sigma=sigma), inputs)
    _assert_same(dcl, theirs_dcl)
    _assert_same(dclw, theirs_dclw)
    # negative controls: the comparison can fail (DCL is not DCLW, nor lightly's NT-Xent)
    _assert_differs(dcl, theirs_dclw)
    theirs_ntxent = _lightly(lightly_loss.NTXentLoss(temperature=temperature), inputs)
    _assert_differs(dcl, theirs_ntxent)
    _assert_same(_value_and_grads(lambda a, b: info_nce(a, b, temperature), inputs), theirs_ntxent)
