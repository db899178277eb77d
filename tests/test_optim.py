"""Tests of parameter grouping, LARS, the warmup-cosine schedule and learning-rate scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from contrastive.optim import LARS, param_groups, scale_learning_rate, warmup_cosine


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# param_groups
# --------------------------------------------------------------------------------------------


def test_param_groups_exclude_biases_and_norm_parameters() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2)
    )
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    model.append(frozen)

    decay, no_decay = param_groups(model, weight_decay=1e-4)
    assert decay["weight_decay"] == 1e-4 and decay["lars_exclude"] is False
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True

    conv, bn, _, linear, ln, _ = model

    def ids(params: list) -> set[int]:
        return {id(p) for p in params}

    assert ids(decay["params"]) == ids([conv.weight, linear.weight])
    assert ids(no_decay["params"]) == ids(
        [conv.bias, bn.weight, bn.bias, linear.bias, ln.weight, ln.bias]
    )
    assert all(p.ndim >= 2 for p in decay["params"])
    assert not ids([frozen.weight, frozen.bias]) & ids(decay["params"] + no_decay["params"])


# --------------------------------------------------------------------------------------------
# LARS
# --------------------------------------------------------------------------------------------


def _lars_reference(
    weight: Tensor,
    grads: list[Tensor],
    lr: float,
    momentum: float,
    weight_decay: float,
    eta: float,
    exclude: bool,
) -> Tensor:
    """The documented update, from v = 0, in float64 python-level steps."""
    w = weight.clone().double()
    v = torch.zeros_like(w)
    for g in grads:
        g = g.double() + weight_decay * w
        if not exclude:
            w_norm = math.sqrt(float((w * w).sum()))
            g_norm = math.sqrt(float((g * g).sum()))
            trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
            g = trust * g
        v = momentum * v + g
        w = w - lr * v
    return w


def test_lars_one_step_by_hand() -> None:
    # w = (3, 4), ||w|| = 5; g = (0, 1) + 0.5 w = (1.5, 3), ||g|| = sqrt(11.25).
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.02)
    w.grad = torch.tensor([0.0, 1.0], dtype=torch.float64)
    opt.step()
    trust = 0.02 * 5 / math.sqrt(11.25)
    expected = [3 - 0.1 * trust * 1.5, 4 - 0.1 * trust * 3]
    assert w.tolist() == pytest.approx(expected, rel=1e-12)


def test_lars_matches_the_reference_over_several_steps() -> None:
    lr, momentum, weight_decay, eta = 0.3, 0.9, 1e-2, 1e-3
    generator = _gen()
    weight0 = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    bias0 = torch.randn(5, dtype=torch.float64, generator=generator)
    grads_w = [torch.randn(5, 4, dtype=torch.float64, generator=generator) for _ in range(3)]
    grads_b = [torch.randn(5, dtype=torch.float64, generator=generator) for _ in range(3)]

    weight, bias = nn.Parameter(weight0.clone()), nn.Parameter(bias0.clone())
    untouched = nn.Parameter(torch.ones(2, dtype=torch.float64))  # never gets a gradient
    opt = LARS(
        [
            {"params": [weight], "weight_decay": weight_decay, "lars_exclude": False},
            {"params": [bias, untouched], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=lr,
        momentum=momentum,
        eta=eta,
    )
    for g_w, g_b in zip(grads_w, grads_b, strict=True):
        weight.grad, bias.grad = g_w.clone(), g_b.clone()
        opt.step()

    expected_w = _lars_reference(weight0, grads_w, lr, momentum, weight_decay, eta, False)
    expected_b = _lars_reference(bias0, grads_b, lr, momentum, 0.0, eta, True)
    torch.testing.assert_close(weight.detach(), expected_w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bias.detach(), expected_b, rtol=1e-12, atol=1e-14)
    assert torch.equal(untouched.detach(), torch.ones(2, dtype=torch.float64))

    # The excluded group is exactly torch's SGD with momentum.
    sgd_bias = nn.Parameter(bias0.clone())
    sgd = torch.optim.SGD([sgd_bias], lr=lr, momentum=momentum)
    for g_b in grads_b:
        sgd_bias.grad = g_b.clone()
        sgd.step()
    torch.testing.assert_close(bias.detach(), sgd_bias.detach(), rtol=1e-12, atol=1e-14)


def test_lars_trust_ratio_is_one_for_a_zero_weight() -> None:
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = LARS([w], lr=0.5, momentum=0.0, eta=1e-3)
    w.grad = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    opt.step()
    assert w.tolist() == pytest.approx([-0.5, 1.0, -2.0], rel=1e-12)


def test_lars_returns_the_closure_loss() -> None:
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = LARS([w], lr=0.1)

    def closure() -> float:
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return float(loss.detach())

    assert opt.step(closure) == pytest.approx(5.0)
    assert not torch.equal(w.detach(), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"lr": 0.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"eta": 0.0}, "eta")],
)
def test_lars_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LARS([nn.Parameter(torch.zeros(1))], **{"lr": 0.1, **kwargs})


# --------------------------------------------------------------------------------------------
# warmup_cosine
# --------------------------------------------------------------------------------------------


def _rates(total: int, per_epoch: int, warmup: float, ratio: float, base: float) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = warmup_cosine(
        opt, total, steps_per_epoch=per_epoch, warmup_epochs=warmup, min_lr_ratio=ratio
    )
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_warmup_cosine_key_points() -> None:
    base, ratio, total = 0.4, 0.1, 20
    rates = _rates(total, per_epoch=4, warmup=1.5, ratio=ratio, base=base)  # 6 warmup steps
    warmup = 6

    def cosine(step: int) -> float:
        progress = (step - warmup) / (total - warmup)
        return base * (ratio + (1 - ratio) * (1 + math.cos(math.pi * progress)) / 2)

    assert rates[0] == pytest.approx(base / warmup)
    assert rates[3] == pytest.approx(base * 4 / warmup)
    assert rates[warmup - 1] == pytest.approx(base)  # end of warmup
    assert rates[warmup] == pytest.approx(base)  # cosine starts at the base rate
    assert rates[13] == pytest.approx(base * (ratio + (1 - ratio) / 2))  # midpoint
    assert rates[13] == pytest.approx(cosine(13))
    assert rates[total - 1] == pytest.approx(cosine(total - 1))
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1 :], strict=False))


def test_warmup_cosine_without_warmup_and_past_the_end() -> None:
    rates = _rates(10, per_epoch=1, warmup=0.0, ratio=0.0, base=1.0)
    assert rates[0] == pytest.approx(1.0)
    assert rates[5] == pytest.approx(0.5)
    assert rates[9] == pytest.approx((1 + math.cos(math.pi * 0.9)) / 2)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, 10, min_lr_ratio=0.2)
    assert sched.lr_lambdas[0](25) == pytest.approx(0.2)  # held at the floor


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"total_steps": 0}, "total_steps"), ({"warmup_epochs": -1}, "warmup")]
)
def test_warmup_cosine_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        warmup_cosine(opt, **{"total_steps": 10, **kwargs})


# --------------------------------------------------------------------------------------------
# scale_learning_rate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "batch", "expected"),
    [
        ("none", 4096, 0.3),
        ("linear", 512, 0.6),
        ("linear", 128, 0.15),
        ("linear", 256, 0.3),
        ("sqrt", 1024, 0.6),
        ("sqrt", 64, 0.15),
        ("sqrt", 4096, 1.2),
    ],
)
def test_scale_learning_rate_rules(rule: str, batch: int, expected: float) -> None:
    assert scale_learning_rate(0.3, batch, rule) == pytest.approx(expected, rel=1e-12)


def test_scale_learning_rate_default_is_no_scaling() -> None:
    assert scale_learning_rate(0.3, 4096) == 0.3


def test_scale_learning_rate_rejects_an_unknown_rule() -> None:
    with pytest.raises(ValueError, match=r"'cubic'.*none, linear or sqrt"):
        scale_learning_rate(0.3, 512, "cubic")
