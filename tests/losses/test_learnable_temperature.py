"""A temperature that is a 0-dim tensor: dL/dT of the dense and blocked paths and of
``moco_loss`` equal an independent float64 loop reference (``torch.autograd`` on the loss
written out anchor by anchor, ``T`` a float64 leaf), rtol 1e-9; negative controls show that
a missing or sign-flipped temperature gradient fails the same comparison."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from contrastive.losses import contrastive_loss, moco_loss
from contrastive.losses.blocked import BlockedContrastiveLosses

RTOL, ATOL = 1e-9, 1e-12  # float64


def _unit(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def reference_loss(
    anchors: Tensor,
    candidates: Tensor,
    anchor_labels: Sequence[int],
    candidate_labels: Sequence[int],
    self_index: Sequence[int],
    temperature: Tensor,
    decoupled: bool = False,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """The general contrastive loss written out per anchor: the mean over the anchors with a
    positive of ``lse_{k in D(i)}(s_ik / T) - w_i mean_{p in P(i)} s_ip / T``."""
    anchor_units = [_unit(a) for a in anchors]
    candidate_units = [_unit(c) for c in candidates]
    terms = []
    for i, a in enumerate(anchor_units):
        others = [k for k in range(len(candidate_units)) if k != self_index[i]]
        positives = [k for k in others if candidate_labels[k] == anchor_labels[i]]
        if not positives:
            continue
        denominator = [k for k in others if not (decoupled and k in positives)]
        logits = [a @ candidate_units[k] / temperature for k in denominator]
        log_sum = torch.log(torch.stack([torch.exp(t) for t in logits]).sum()) if logits else 0.0
        mean_positive = sum(a @ candidate_units[p] for p in positives) / len(positives)
        weight = 1.0 if weights is None else float(weights[i])
        terms.append(log_sum - weight * mean_positive / temperature)
    return torch.stack(terms).mean()


def reference_moco(
    queries: Tensor, keys: Tensor, queue: Tensor, temperature: Tensor, decoupled: bool
) -> Tensor:
    """MoCo's loss per query: the key is the positive, the queue the negatives."""
    total = torch.zeros((), dtype=torch.float64)
    for query, key in zip(queries, keys, strict=True):
        q = _unit(query)
        positive = q @ _unit(key) / temperature
        negatives = [q @ _unit(u) / temperature for u in queue]
        terms = negatives if decoupled else [positive, *negatives]
        log_sum = torch.log(torch.stack([torch.exp(t) for t in terms]).sum()) if terms else 0.0
        total = total - positive + log_sum
    return total / len(queries)


def temperature_grad(loss_fn: Callable[[Tensor], Tensor], value: float) -> Tensor:
    """dL/dT at ``T = value`` (a float64 leaf); 0 where no gradient reached it."""
    temperature = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    loss_fn(temperature).backward()
    grad = temperature.grad
    return torch.zeros((), dtype=torch.float64) if grad is None else grad


def assert_grad_matches(actual: Tensor, expected: Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


def general_problem(seed: int) -> dict[str, Any]:
    """One rank's anchors against gathered candidates: several positives per anchor, self at
    an offset, an anchor with no positive (label 99), one not among the candidates (-1)."""
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.randn(30, 8, dtype=torch.float64, generator=generator)
    anchors = torch.randn(12, 8, dtype=torch.float64, generator=generator)
    candidate_labels = torch.randint(0, 6, (30,), generator=generator)
    return {
        "anchors": anchors,
        "candidates": candidates,
        "anchor_labels": torch.cat([candidate_labels[10:21], torch.tensor([99])]),
        "candidate_labels": candidate_labels,
        "self_index": torch.cat([torch.arange(10, 21), torch.tensor([-1])]),
        "weights": torch.rand(12, dtype=torch.float64, generator=generator) * 2,
    }


def supcon_problem(seed: int) -> dict[str, Any]:
    """Two views of 10 samples of 4 classes, all anchors and candidates (SupCon)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(20, 6, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 4, (10,), generator=generator).repeat(2)
    return {
        "anchors": embeddings,
        "candidates": embeddings,
        "anchor_labels": labels,
        "candidate_labels": labels,
        "self_index": torch.arange(20),
        "weights": None,
    }


def _core(problem: dict[str, Any], block: int | None, decoupled: bool, weighted: bool) -> Any:
    def loss(temperature: Tensor) -> Tensor:
        return contrastive_loss(
            problem["anchors"],
            problem["candidates"],
            problem["anchor_labels"],
            problem["candidate_labels"],
            problem["self_index"],
            temperature,
            block,
            decoupled=decoupled,
            positive_weights=problem["weights"] if weighted else None,
        )

    return loss


def _reference(problem: dict[str, Any], decoupled: bool, weighted: bool) -> Any:
    def loss(temperature: Tensor) -> Tensor:
        return reference_loss(
            problem["anchors"],
            problem["candidates"],
            problem["anchor_labels"].tolist(),
            problem["candidate_labels"].tolist(),
            problem["self_index"].tolist(),
            temperature,
            decoupled,
            problem["weights"] if weighted else None,
        )

    return loss


CASES = [
    ("general", False, False),  # coupled
    ("general", True, False),  # decoupled
    ("general", False, True),  # weighted positives
    ("general", True, True),  # DCLW-like
    ("supcon", False, False),
    ("supcon", True, False),
]


@pytest.mark.parametrize("block", [None, 1, 5])
@pytest.mark.parametrize(("kind", "decoupled", "weighted"), CASES)
def test_temperature_gradient_of_the_core_equals_the_reference(
    block: int | None, kind: str, decoupled: bool, weighted: bool
) -> None:
    problem = (general_problem if kind == "general" else supcon_problem)(block or 0)
    temperature = 0.3
    expected = temperature_grad(_reference(problem, decoupled, weighted), temperature)
    actual = temperature_grad(_core(problem, block, decoupled, weighted), temperature)
    assert_grad_matches(actual, expected)
    # negative controls: the reference gradient is not 0, so a path that gave none (0) or
    # the wrong sign would fail the comparison above
    assert abs(expected.item()) > 1e-3
    for wrong in (torch.zeros_like(expected), -expected):
        with pytest.raises(AssertionError):
            assert_grad_matches(wrong, expected)


@pytest.mark.parametrize("block", [None, 4])
def test_a_tensor_temperature_gives_the_float_values_and_embedding_gradients(
    block: int | None,
) -> None:
    problem = general_problem(7)
    leaves = [problem[k].clone().requires_grad_(True) for k in ("anchors", "candidates")]

    def run(temperature: float | Tensor) -> list[Tensor]:
        for leaf in leaves:
            leaf.grad = None
        loss = contrastive_loss(
            *leaves,
            problem["anchor_labels"],
            problem["candidate_labels"],
            problem["self_index"],
            temperature,
            block,
            decoupled=True,
            positive_weights=problem["weights"],
        )
        loss.backward()
        return [loss.detach(), *(leaf.grad for leaf in leaves)]  # type: ignore[misc]

    as_float = run(0.25)
    as_tensor = run(torch.tensor(0.25, dtype=torch.float64, requires_grad=True))
    for got, want in zip(as_tensor, as_float, strict=True):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


class _NoTemperatureGradient(BlockedContrastiveLosses):
    """A broken blocked path for the negative control: no gradient for the temperature."""

    @staticmethod
    def backward(ctx: Any, grad_losses: Tensor, grad_counts: Tensor | None) -> Any:
        grads = BlockedContrastiveLosses.backward(ctx, grad_losses, grad_counts)
        return (*grads[:5], None, *grads[6:])


def test_negative_control_a_blocked_backward_without_temperature_gradient_is_caught() -> None:
    problem = general_problem(3)
    expected = temperature_grad(_reference(problem, False, False), 0.3)

    def broken(temperature: Tensor) -> Tensor:
        anchors, candidates = (
            torch.nn.functional.normalize(problem[k], dim=1) for k in ("anchors", "candidates")
        )
        losses, counts = _NoTemperatureGradient.apply(
            anchors,
            candidates,
            problem["anchor_labels"],
            problem["candidate_labels"],
            problem["self_index"],
            temperature,
            5,
        )
        return losses[counts > 0].mean()

    with pytest.raises(AssertionError):
        assert_grad_matches(temperature_grad(broken, 0.3), expected)


@pytest.mark.parametrize("size", [0, 7])
@pytest.mark.parametrize("decoupled", [False, True])
def test_moco_loss_temperature_gradient_equals_the_reference(size: int, decoupled: bool) -> None:
    generator = torch.Generator().manual_seed(size)
    queries, keys = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    queue = torch.randn(size, 5, generator=generator, dtype=torch.float64)
    expected = temperature_grad(lambda t: reference_moco(queries, keys, queue, t, decoupled), 0.2)
    actual = temperature_grad(lambda t: moco_loss(queries, keys, queue, t, decoupled), 0.2)
    assert_grad_matches(actual, expected)
    if size == 0 and not decoupled:  # one candidate, the positive: the loss is 0
        assert abs(expected.item()) < 1e-12
        return
    assert abs(expected.item()) > 1e-3  # negative control: 0 or -dL/dT would fail
    for wrong in (torch.zeros_like(expected), -expected):
        with pytest.raises(AssertionError):
            assert_grad_matches(wrong, expected)


def test_a_temperature_tensor_must_be_0_dim_and_floating() -> None:
    z = torch.randn(4, 3)
    labels, self_index = torch.arange(4), torch.full((4,), -1)
    for bad in (torch.tensor([0.1]), torch.tensor(1)):
        match = r"temperature must be a finite number > 0 or a 0-dim floating-point tensor"
        with pytest.raises(ValueError, match=match):
            contrastive_loss(z, z, labels, labels, self_index, bad)
        with pytest.raises(ValueError, match=match):
            moco_loss(z, z, z, bad)


# --------------------------------------------------------------------------------------------
# InfoNCELoss(learnable_temperature=True): every form, against the loop reference
# --------------------------------------------------------------------------------------------


def _views(seed: int, num_views: int = 2, num: int = 10, dim: int = 6) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_views, num, dim, dtype=torch.float64, generator=generator)


def _vmf_weights(z_a: Tensor, z_b: Tensor, sigma: float) -> list[float]:
    """DCLW's w_n = 2 - N softmax_n(cos(z_a,n, z_b,n) / sigma), written out."""
    cosines = [float(_unit(a) @ _unit(b)) for a, b in zip(z_a, z_b, strict=True)]
    exps = [torch.exp(torch.tensor(c / sigma, dtype=torch.float64)) for c in cosines]
    total = sum(exps)
    return [2.0 - len(cosines) * float(e / total) for e in exps]


def _form(name: str, seed: int) -> tuple[Callable[[Any], Tensor], Callable[[Tensor], Tensor]]:
    """``(call, reference)``: the module form on fixed inputs, and the same loss written out
    per anchor as a function of T (anchors, candidates, labels and self built by hand)."""
    views = _views(seed, 3 if name in ("multi_view_supcon", "multi_crop") else 2)
    num = views.shape[1]
    labels = torch.randint(0, 3, (num,), generator=torch.Generator().manual_seed(seed))
    instance = list(range(num))
    if name in ("two_view", "two_view_dclw"):
        flat = views.reshape(2 * num, -1)
        weights = _vmf_weights(views[0], views[1], 0.5) * 2 if name == "two_view_dclw" else None
        decoupled = name == "two_view_dclw"
        return lambda m: m(views[0], views[1]), lambda t: reference_loss(
            flat, flat, instance * 2, instance * 2, list(range(2 * num)), t, decoupled, weights
        )
    if name == "multi_view_supcon":
        flat, by_class = views.reshape(3 * num, -1), labels.tolist() * 3
        return lambda m: m.forward_views(views, labels), lambda t: reference_loss(
            flat, flat, by_class, by_class, list(range(3 * num)), t
        )
    if name in ("pairs", "pairs_decoupled"):
        decoupled = name == "pairs_decoupled"
        return lambda m: m.forward_pairs(views[0], views[1]), lambda t: reference_loss(
            views[0], views[1], instance, instance, [-1] * num, t, decoupled
        )
    assert name == "multi_crop"  # 2 global views, 1 local view, SupCon labels
    global_views, local_views = views[:2], views[2:]
    candidates = global_views.reshape(2 * num, -1)
    anchors = torch.cat([candidates, local_views.reshape(num, -1)])
    return lambda m: m.forward_multi_crop(
        global_views, local_views, labels
    ), lambda t: reference_loss(
        anchors,
        candidates,
        labels.tolist() * 3,
        labels.tolist() * 2,
        list(range(2 * num)) + [-1] * num,
        t,
    )


FORMS = {
    "two_view": {},
    "two_view_dclw": {"decoupled": True, "weighting": "vmf"},
    "multi_view_supcon": {},
    "pairs": {},
    "pairs_decoupled": {"decoupled": True},
    "multi_crop": {},
}


@pytest.mark.parametrize("block", [None, 4])
@pytest.mark.parametrize("name", list(FORMS))
def test_the_learnt_temperature_gradient_of_every_form_equals_the_reference(
    name: str, block: int | None
) -> None:
    from contrastive.losses import InfoNCELoss

    criterion = InfoNCELoss(0.3, block_size=block, learnable_temperature=True, **FORMS[name])
    criterion = criterion.double()
    call, reference = _form(name, seed=len(name))
    loss = call(criterion)
    loss.backward()
    log_temperature = criterion.log_temperature.detach().clone().requires_grad_(True)  # type: ignore[union-attr]
    expected_loss = reference(log_temperature.exp())
    expected_loss.backward()
    torch.testing.assert_close(loss.detach(), expected_loss.detach(), rtol=RTOL, atol=ATOL)
    expected = log_temperature.grad
    assert expected is not None and abs(expected.item()) > 1e-3  # negative control: 0 fails
    actual = criterion.log_temperature.grad  # type: ignore[union-attr]
    assert actual is not None
    assert_grad_matches(actual, expected)
    with pytest.raises(AssertionError):
        assert_grad_matches(-actual, expected)


def test_moco_loss_with_the_modules_learnt_temperature() -> None:
    from contrastive.losses import InfoNCELoss

    criterion = InfoNCELoss(0.2, learnable_temperature=True).double()
    views, queue = _views(5), _views(6, num_views=1)[0]
    moco_loss(views[0], views[1], queue, criterion.current_temperature()).backward()
    log_temperature = criterion.log_temperature.detach().clone().requires_grad_(True)  # type: ignore[union-attr]
    reference_moco(views[0], views[1], queue, log_temperature.exp(), False).backward()
    assert log_temperature.grad is not None and abs(log_temperature.grad.item()) > 1e-3
    assert_grad_matches(criterion.log_temperature.grad, log_temperature.grad)  # type: ignore[union-attr, arg-type]


def test_the_learnt_temperature_is_a_parameter_in_the_state_dict() -> None:
    from contrastive.losses import InfoNCELoss

    fixed, learnt = InfoNCELoss(0.2), InfoNCELoss(0.2, learnable_temperature=True)
    assert list(fixed.state_dict()) == [] and list(fixed.parameters()) == []
    assert fixed.temperature == 0.2 and fixed.current_temperature() == 0.2  # a float
    assert list(learnt.state_dict()) == ["log_temperature"]
    assert [p.shape for p in learnt.parameters()] == [torch.Size([])]
    assert learnt.temperature.requires_grad is False  # type: ignore[union-attr]
    torch.testing.assert_close(learnt.temperature, torch.tensor(0.2))
    assert "learnable_temperature=True" in repr(learnt) and "temperature=0.2" in repr(learnt)
    other = InfoNCELoss(0.5, learnable_temperature=True)
    other.load_state_dict({"log_temperature": torch.tensor(-1.0)})
    torch.testing.assert_close(other.temperature, torch.tensor(-1.0).exp())


def test_one_optimiser_step_moves_it_without_weight_decay() -> None:
    from contrastive.losses import InfoNCELoss
    from contrastive.optim import param_groups

    criterion = InfoNCELoss(0.2, learnable_temperature=True)
    head = torch.nn.Linear(6, 4)
    groups = param_groups(torch.nn.ModuleList([head, criterion]))
    decayed, not_decayed = groups
    assert any(p is criterion.log_temperature for p in not_decayed["params"])
    assert not any(p is criterion.log_temperature for p in decayed["params"])
    assert not_decayed["weight_decay"] == 0.0 and not_decayed["lars_exclude"]
    optimizer = torch.optim.SGD(groups, lr=0.1, weight_decay=0.5)
    views = _views(1).float()
    criterion(head(views[0]), head(views[1])).backward()
    before = criterion.log_temperature.detach().clone()  # type: ignore[union-attr]
    grad = criterion.log_temperature.grad.clone()  # type: ignore[union-attr]
    assert grad.abs().item() > 0
    optimizer.step()
    after = criterion.log_temperature.detach()  # type: ignore[union-attr]
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, before - 0.1 * grad)  # plain SGD: no weight decay
    assert float(criterion.temperature) != pytest.approx(0.2)  # the reported T moved too


def test_below_the_clamp_t_is_min_temperature_and_the_gradient_is_zero() -> None:
    from contrastive.losses import InfoNCELoss

    criterion = InfoNCELoss(0.05, learnable_temperature=True, min_temperature=0.02)
    views = _views(2).float()
    with torch.no_grad():
        criterion.log_temperature.fill_(torch.log(torch.tensor(0.001)).item())  # type: ignore[union-attr]
    assert float(criterion.temperature) == pytest.approx(0.02)
    criterion(views[0], views[1]).backward()
    assert criterion.log_temperature.grad.item() == 0.0  # type: ignore[union-attr]
    with torch.no_grad():  # negative control: just above the clamp the gradient is not 0
        criterion.log_temperature.fill_(torch.log(torch.tensor(0.03)).item())  # type: ignore[union-attr]
    criterion.log_temperature.grad = None  # type: ignore[union-attr]
    criterion(views[0], views[1]).backward()
    assert criterion.log_temperature.grad.abs().item() > 1e-3  # type: ignore[union-attr]


def test_a_learnt_temperature_below_min_temperature_and_bad_options_are_refused() -> None:
    from contrastive.losses import InfoNCELoss

    match = r"temperature must be >= min_temperature \(0.01\).*got temperature 0.005"
    with pytest.raises(ValueError, match=match):
        InfoNCELoss(0.005, learnable_temperature=True)
    InfoNCELoss(0.005)  # a fixed temperature is not clamped
    InfoNCELoss(0.01, learnable_temperature=True)  # at the clamp: allowed
    with pytest.raises(ValueError, match=r"min_temperature must be a finite number > 0, got 0"):
        InfoNCELoss(0.1, learnable_temperature=True, min_temperature=0)
    with pytest.raises(ValueError, match=r"learnable_temperature must be true or false, got 1"):
        InfoNCELoss(0.1, learnable_temperature=1)  # type: ignore[arg-type]
