"""Output activations against explicit float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from contrastive.losses import (
    SoftmaxWithTemperature,
    log_softmax_with_temperature,
    sigmoid,
    softmax_with_temperature,
    tanh,
)

RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons


def _logits(*shape: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(shape, generator=generator, dtype=torch.float64)


def reference_softmax(row: list[float], temperature: float) -> list[float]:
    exponentials = [math.exp(value / temperature) for value in row]
    return [e / sum(exponentials) for e in exponentials]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_softmax_with_temperature_matches_formula(temperature: float) -> None:
    logits = _logits(4, 5, seed=1)
    expected = torch.tensor(
        [reference_softmax(row, temperature) for row in logits.tolist()], dtype=torch.float64
    )
    probabilities = softmax_with_temperature(logits, temperature)
    torch.testing.assert_close(probabilities, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(
        probabilities.sum(dim=-1), torch.ones(4, dtype=torch.float64), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        log_softmax_with_temperature(logits, temperature), torch.log(expected), rtol=RTOL, atol=ATOL
    )


def test_softmax_dim_argument() -> None:
    logits = _logits(3, 4, seed=2)
    columns = softmax_with_temperature(logits, 2.0, dim=0)
    torch.testing.assert_close(
        columns.sum(dim=0), torch.ones(4, dtype=torch.float64), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        columns, softmax_with_temperature(logits.T, 2.0).T, rtol=RTOL, atol=ATOL
    )


def test_temperature_limits() -> None:
    logits = _logits(2, 6, seed=3)
    uniform = softmax_with_temperature(logits, temperature=1e8)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 1 / 6), rtol=0, atol=1e-7)
    sharp = softmax_with_temperature(logits, temperature=1e-3)
    one_hot = torch.nn.functional.one_hot(logits.argmax(dim=1), 6).to(torch.float64)
    torch.testing.assert_close(sharp, one_hot, rtol=0, atol=1e-12)


def test_log_softmax_with_temperature_is_stable() -> None:
    logits = torch.tensor([[0.0, 1e5, -1e5]])
    log_probs = log_softmax_with_temperature(logits, temperature=1e-2)
    assert torch.isfinite(log_probs[0, 1]) and log_probs[0, 1].item() == 0.0
    assert log_probs[0, 0].item() == pytest.approx(-1e7)


def test_sigmoid_and_tanh_match_formulas() -> None:
    values = _logits(7, seed=4)
    expected_sigmoid = torch.tensor(
        [1 / (1 + math.exp(-v)) for v in values.tolist()], dtype=torch.float64
    )
    expected_tanh = torch.tensor(
        [(math.exp(v) - math.exp(-v)) / (math.exp(v) + math.exp(-v)) for v in values.tolist()],
        dtype=torch.float64,
    )
    torch.testing.assert_close(sigmoid(values), expected_sigmoid, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(tanh(values), expected_tanh, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(tanh(values), 2 * sigmoid(2 * values) - 1, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number > 0") as error:
        SoftmaxWithTemperature(temperature=bad)
    assert repr(bad) in str(error.value)
    with pytest.raises(ValueError, match="temperature"):
        softmax_with_temperature(torch.zeros(3), bad)
    with pytest.raises(ValueError, match="temperature"):
        log_softmax_with_temperature(torch.zeros(3), bad)


def test_module_matches_function() -> None:
    module = SoftmaxWithTemperature(temperature=2.5, dim=0)
    assert "temperature=2.5" in repr(module) and "dim=0" in repr(module)
    logits = _logits(3, 2, seed=5)
    torch.testing.assert_close(
        module(logits), softmax_with_temperature(logits, 2.5, dim=0), rtol=RTOL, atol=ATOL
    )


def _weighted_sum_gradient(function: object, inputs: Tensor, weights: Tensor) -> Tensor:
    """d/dx of sum(w * function(x)), by autograd."""
    inputs = inputs.clone().requires_grad_(True)
    (weights * function(inputs)).sum().backward()  # type: ignore[operator]
    assert inputs.grad is not None
    return inputs.grad


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_softmax_gradients_match_the_closed_form(temperature: float) -> None:
    """For p = softmax(x / T) and any weights w: d/dx_j sum_i w_i p_i =
    p_j (w_j - sum_i w_i p_i) / T, and d/dx_j sum_i w_i log p_i = (w_j - p_j sum_i w_i) / T,
    computed here row by row in Python floats."""
    logits, weights = _logits(4, 5, seed=5), _logits(4, 5, seed=6)
    softmax_grad, log_softmax_grad = [], []
    for row, w in zip(logits.tolist(), weights.tolist(), strict=True):
        p = reference_softmax(row, temperature)
        mean = sum(wi * pi for wi, pi in zip(w, p, strict=True))
        softmax_grad.append([pj * (wj - mean) / temperature for pj, wj in zip(p, w, strict=True)])
        log_softmax_grad.append(
            [(wj - pj * sum(w)) / temperature for pj, wj in zip(p, w, strict=True)]
        )
    expected = torch.tensor(softmax_grad, dtype=torch.float64)
    ours = _weighted_sum_gradient(
        lambda x: softmax_with_temperature(x, temperature), logits, weights
    )
    torch.testing.assert_close(ours, expected, rtol=RTOL, atol=ATOL)
    if temperature != 1.0:  # negative control: the same formula without 1/T does not match
        assert not torch.allclose(ours, expected * temperature, rtol=RTOL, atol=ATOL)
    log_ours = _weighted_sum_gradient(
        lambda x: log_softmax_with_temperature(x, temperature), logits, weights
    )
    torch.testing.assert_close(
        log_ours, torch.tensor(log_softmax_grad, dtype=torch.float64), rtol=RTOL, atol=ATOL
    )
    module = _weighted_sum_gradient(SoftmaxWithTemperature(temperature), logits, weights)
    torch.testing.assert_close(module, expected, rtol=RTOL, atol=ATOL)


def test_sigmoid_and_tanh_gradients_match_the_closed_form() -> None:
    """d sigmoid(x)/dx = s (1 - s) and d tanh(x)/dx = 1 - t^2, from Python floats."""
    values, weights = _logits(7, seed=7), _logits(7, seed=8)
    s = [1 / (1 + math.exp(-v)) for v in values.tolist()]
    t = [math.tanh(v) for v in values.tolist()]
    w = weights.tolist()
    expected_sigmoid = torch.tensor(
        [wi * si * (1 - si) for wi, si in zip(w, s, strict=True)], dtype=torch.float64
    )
    expected_tanh = torch.tensor(
        [wi * (1 - ti * ti) for wi, ti in zip(w, t, strict=True)], dtype=torch.float64
    )
    torch.testing.assert_close(
        _weighted_sum_gradient(sigmoid, values, weights),
        expected_sigmoid,
        rtol=RTOL,
        atol=ATOL,
    )
    torch.testing.assert_close(
        _weighted_sum_gradient(tanh, values, weights),
        expected_tanh,
        rtol=RTOL,
        atol=ATOL,
    )
