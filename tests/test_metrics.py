"""Representation-health metrics against float64 loop references and known answers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from contrastive.metrics import alignment, effective_rank, uniformity


def _unit(row: torch.Tensor) -> list[float]:
    norm = math.sqrt(sum(float(x) ** 2 for x in row))
    return [float(x) / norm for x in row]


def test_alignment_matches_a_loop() -> None:
    z1, z2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    expected = 0.0
    for a, b in zip(z1, z2, strict=True):
        expected += sum((x - y) ** 2 for x, y in zip(_unit(a), _unit(b), strict=True))
    assert alignment(z1, z2).item() == pytest.approx(expected / 6, rel=1e-6)
    assert alignment(z1, 3 * z1).item() == pytest.approx(0.0, abs=1e-6)


def test_uniformity_matches_a_loop() -> None:
    z = torch.randn(7, 3, dtype=torch.float64)
    units = [_unit(row) for row in z]
    pairs = list(itertools.combinations(units, 2))
    total = sum(
        math.exp(-2 * sum((x - y) ** 2 for x, y in zip(a, b, strict=True))) for a, b in pairs
    )
    assert uniformity(z).item() == pytest.approx(math.log(total / len(pairs)), rel=1e-5)
    # antipodal pairs are the most uniform two points can be: log e^{-2*4} = -8
    assert uniformity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])).item() == pytest.approx(-8.0)


def test_effective_rank_known_answers_and_an_eigenvalue_reference() -> None:
    assert effective_rank(torch.eye(5)).item() == pytest.approx(5.0, rel=1e-5)
    collapsed = torch.randn(32, 1) @ torch.randn(1, 16)  # every embedding on one line
    assert effective_rank(collapsed).item() == pytest.approx(1.0, rel=1e-3)
    z = torch.randn(20, 6, dtype=torch.float64)
    # singular values from the eigenvalues of Z^T Z: an independent route
    singular = torch.linalg.eigvalsh(z.T @ z).clamp_min(0).sqrt()
    p = singular / singular.sum() + 1e-7
    expected = math.exp(-float((p * p.log()).sum()))
    assert effective_rank(z).item() == pytest.approx(expected, rel=1e-5)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"\(N, D\) tensor with N >= 2, got \(1, 3\)"):
        uniformity(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"two \(N, D\) tensors"):
        alignment(torch.zeros(2, 3), torch.zeros(3, 3))
