"""Metrics of embeddings against float64 loop references and known answers: representation
health, pair similarities and the weighted kNN vote."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from contrastive.metrics import (
    alignment,
    effective_rank,
    knn_predict,
    similarity_stats,
    uniformity,
)


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


# --------------------------------------------------------------------------------------------
# similarity_stats
# --------------------------------------------------------------------------------------------


def _unit_vector(vector: Tensor) -> Tensor:
    return vector / torch.sqrt((vector * vector).sum())


def test_similarity_stats_match_loops() -> None:
    generator = torch.Generator().manual_seed(15)
    z_a, z_b = (torch.randn((4, 3), generator=generator, dtype=torch.float64) for _ in range(2))
    units = [_unit_vector(v) for v in list(z_a) + list(z_b)]
    positives = [float(units[n] @ units[n + 4]) for n in range(4)]
    negatives = [
        float(units[i] @ units[k])
        for i in range(8)
        for k in range(8)
        if i != k and k != (i + 4) % 8
    ]
    assert len(negatives) == 8 * 6
    stats = similarity_stats(z_a, z_b)
    assert set(stats) == {"pos_sim", "neg_sim"}
    assert stats["pos_sim"].item() == pytest.approx(sum(positives) / 4, rel=1e-12)
    assert stats["neg_sim"].item() == pytest.approx(sum(negatives) / len(negatives), rel=1e-12)
    assert not stats["pos_sim"].requires_grad
    assert torch.isnan(similarity_stats(torch.ones(1, 3), torch.ones(1, 3))["neg_sim"])


# --------------------------------------------------------------------------------------------
# knn_predict: the weighted kNN vote against a brute-force float64 reference
# --------------------------------------------------------------------------------------------


def _knn_reference(
    query: Tensor, bank: Tensor, labels: Tensor, num_classes: int, k: int, temperature: float
) -> Tensor:
    """Loop over queries: cosine similarities, sort, top-k, sum exp(s / T) per class."""
    query, bank = query.double(), bank.double()
    scores = torch.zeros(query.shape[0], num_classes, dtype=torch.float64)
    for q in range(query.shape[0]):
        sims = []
        for m in range(bank.shape[0]):
            dot = float((query[q] * bank[m]).sum())
            norms = math.sqrt(float((query[q] ** 2).sum())) * math.sqrt(float((bank[m] ** 2).sum()))
            sims.append((dot / norms, int(labels[m])))
        sims.sort(key=lambda pair: pair[0], reverse=True)
        for similarity, label in sims[: min(k, len(sims))]:
            scores[q, label] += math.exp(similarity / temperature)
    return scores


def _knn_data(queries: int, bank: int, dim: int, classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(queries, dim, generator=generator)
    memory = torch.randn(bank, dim, generator=generator) * torch.rand(
        bank, 1, generator=generator
    ).add(0.5)
    labels = torch.randint(0, classes, (bank,), generator=generator)
    return query, memory, labels


@pytest.mark.parametrize("chunk_size", [1, 4, 13, 1024])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_knn_predict_matches_brute_force(chunk_size: int, temperature: float) -> None:
    query, bank, labels = _knn_data(queries=13, bank=40, dim=6, classes=4)
    got = knn_predict(query, bank, labels, 4, k=7, temperature=temperature, chunk_size=chunk_size)
    expected = _knn_reference(query, bank, labels, 4, k=7, temperature=temperature)
    assert got.shape == (13, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_k_larger_than_the_bank_uses_the_whole_bank() -> None:
    query, bank, labels = _knn_data(queries=5, bank=6, dim=4, classes=3, seed=1)
    got = knn_predict(query, bank, labels, 3, k=500, temperature=0.2)
    expected = _knn_reference(query, bank, labels, 3, k=6, temperature=0.2)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    # Every bank sample votes, so the scores sum to the sum of all weights.
    sims = (
        torch.nn.functional.normalize(query.double(), dim=1)
        @ torch.nn.functional.normalize(bank.double(), dim=1).T
    )
    torch.testing.assert_close(got.double().sum(1), (sims / 0.2).exp().sum(1), rtol=1e-5, atol=0)


def test_classes_absent_from_the_neighbours_score_zero() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 2])
    scores = knn_predict(torch.tensor([[2.0, 0.0]]), bank, labels, num_classes=4, k=2)
    assert scores[0, 1] == 0 and scores[0, 2] == 0 and scores[0, 3] == 0
    expected = math.exp(1 / 0.1) + math.exp((0.9 / math.hypot(0.9, 0.1)) / 0.1)
    assert scores[0, 0].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_knn_bad_temperature_raises(temperature: float) -> None:
    query, bank, labels = _knn_data(queries=2, bank=3, dim=2, classes=2)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(query, bank, labels, 2, temperature=temperature)
