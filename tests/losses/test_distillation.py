"""Distillation loss against an explicit float64 loop reference (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from contrastive.losses import KLDivergenceLoss, kl_divergence, seed_loss

RTOL, ATOL = 1e-10, 1e-12  # float64 comparisons


def _leaf(*shape: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=generator, dtype=torch.float64)).requires_grad_()


def _softmax(row: Tensor, temperature: float) -> list[Tensor]:
    shift = max(value.detach().item() for value in row)
    exponentials = [torch.exp((value - shift) / temperature) for value in row]
    normaliser = sum(exponentials)
    return [e / normaliser for e in exponentials]


def reference_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 / N * sum_n sum_k q_nk (log q_nk - log p_nk), q = softmax(t / T), p = softmax(s / T)."""
    total = torch.zeros((), dtype=torch.float64)
    for student_row, teacher_row in zip(student, teacher, strict=True):
        p = _softmax(student_row, temperature)
        q = _softmax(teacher_row, temperature)
        for q_k, p_k in zip(q, p, strict=True):
            total = total + q_k * (torch.log(q_k) - torch.log(p_k))
    return temperature**2 * total / student.shape[0]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_kl_divergence_matches_reference(temperature: float) -> None:
    student, teacher = _leaf(5, 6, seed=1), _leaf(5, 6, seed=2)
    actual = kl_divergence(student, teacher, temperature)
    expected = reference_kl(student, teacher, temperature)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    # the teacher is not detached: both sides get gradients, equal to the reference ones
    actual_grads = torch.autograd.grad(actual, [student, teacher])
    expected_grads = torch.autograd.grad(expected, [student, teacher])
    for actual_grad, expected_grad in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(actual_grad, expected_grad, rtol=RTOL, atol=ATOL)
    assert expected_grads[1].abs().max() > 0


def test_kl_divergence_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = _leaf(4, 3, seed=3)
    assert kl_divergence(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-15)
    # invariant to a per-row shift (softmax is), still zero
    assert kl_divergence(logits + 5.0, logits, 2.0).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(_leaf(4, 3, seed=4), logits, 2.0).item() > 0


def test_temperature_squared_scaling_at_high_temperature() -> None:
    """For T >> |logits|, T^2 KL -> (1/2) * mean_n Var_k(t_n - s_n): independent of T."""
    student, teacher = _leaf(3, 5, seed=5).detach(), _leaf(3, 5, seed=6).detach()
    difference = teacher - student
    limit = 0.5 * difference.var(dim=1, unbiased=False).mean().item()
    for temperature in (1e3, 1e4):
        assert kl_divergence(student, teacher, temperature).item() == pytest.approx(limit, rel=1e-2)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf")])
def test_kl_divergence_rejects_bad_temperature(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number > 0") as error:
        KLDivergenceLoss(temperature=bad)
    assert repr(bad) in str(error.value)
    with pytest.raises(ValueError, match="temperature"):
        kl_divergence(torch.zeros(1, 2), torch.zeros(1, 2), bad)


def test_kl_divergence_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


def test_module_matches_function() -> None:
    criterion = KLDivergenceLoss(temperature=3.0)
    assert "temperature=3.0" in repr(criterion)
    student, teacher = _leaf(2, 4, seed=7), _leaf(2, 4, seed=8)
    torch.testing.assert_close(
        criterion(student, teacher), kl_divergence(student, teacher, 3.0), rtol=RTOL, atol=ATOL
    )
    assert math.isfinite(criterion(student * 100, teacher * 100).item())


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_matches_torch_kl_div_loss_batchmean_times_t_squared(temperature: float) -> None:
    """Value and student gradient equal ``T^2 * nn.KLDivLoss(reduction="batchmean")`` on
    ``log_softmax(s / T)`` against ``softmax(t / T)``, with the teacher held fixed."""
    student, teacher = _leaf(8, 10, seed=9), _leaf(8, 10, seed=10).detach()
    actual = kl_divergence(student, teacher, temperature)
    torch_loss = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(student / temperature, dim=1), torch.softmax(teacher / temperature, 1)
    )
    expected = temperature**2 * torch_loss
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    (actual_grad,) = torch.autograd.grad(actual, student)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=RTOL, atol=ATOL)
    assert actual_grad.abs().max() > 0


def reference_seed(
    student: Tensor, teacher: Tensor, anchors: Tensor, tau_s: float, tau_t: float
) -> Tensor:
    """1/N sum_n KL(q_n || p_n) over the anchors plus the sample's own teacher embedding."""

    def unit(vector: Tensor) -> Tensor:
        return vector / torch.sqrt(sum(component**2 for component in vector))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return sum(x * y for x, y in zip(a, b, strict=True))

    bank = [unit(anchor.detach()) for anchor in anchors]
    total = torch.zeros((), dtype=torch.float64)
    for s_row, t_row in zip(student, teacher, strict=True):
        s, t = unit(s_row), unit(t_row.detach())
        references = [*bank, t]
        q = _softmax(torch.stack([dot(t, a) for a in references]), tau_t)
        p = _softmax(torch.stack([dot(s, a) for a in references]), tau_s)
        for q_j, p_j in zip(q, p, strict=True):
            total = total + q_j * (torch.log(q_j) - torch.log(p_j))
    return total / student.shape[0]


@pytest.mark.parametrize(("tau_s", "tau_t"), [(0.2, 0.05), (0.5, 0.5), (1.0, 0.1)])
def test_seed_loss_matches_reference(tau_s: float, tau_t: float) -> None:
    student, teacher, anchors = _leaf(4, 5, seed=11), _leaf(4, 5, seed=12), _leaf(7, 5, seed=13)
    actual = seed_loss(student, teacher, anchors, tau_s, tau_t)
    expected = reference_seed(student, teacher, anchors, tau_s, tau_t)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    actual_grads = torch.autograd.grad(actual, [student, teacher, anchors], allow_unused=True)
    (expected_grad,) = torch.autograd.grad(expected, [student])
    torch.testing.assert_close(actual_grads[0], expected_grad, rtol=RTOL, atol=ATOL)
    assert expected_grad.abs().max() > 0
    # teacher and anchors are constants for the student's objective
    assert actual_grads[1] is None and actual_grads[2] is None


def test_seed_loss_is_zero_when_the_student_matches_and_checks_inputs() -> None:
    teacher, anchors = _leaf(3, 4, seed=14).detach(), _leaf(6, 4, seed=15).detach()
    assert seed_loss(2 * teacher, teacher, anchors, 0.3, 0.3).item() == pytest.approx(0, abs=1e-12)
    assert seed_loss(_leaf(3, 4, seed=16), teacher, anchors, 0.3, 0.3).item() > 0
    with pytest.raises(ValueError, match=r"anchors must be \(M, 4\).*\(6, 5\)"):
        seed_loss(teacher, teacher, torch.zeros(6, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0\.0"):
        seed_loss(teacher, teacher, anchors, 0.0, 0.1)
