"""Tests of the weighted kNN vote against a brute-force float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from contrastive.callbacks.knn import KNNMonitor, knn_predict


def _reference(
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


def _data(queries: int, bank: int, dim: int, classes: int, seed: int = 0):
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
    query, bank, labels = _data(queries=13, bank=40, dim=6, classes=4)
    got = knn_predict(query, bank, labels, 4, k=7, temperature=temperature, chunk_size=chunk_size)
    expected = _reference(query, bank, labels, 4, k=7, temperature=temperature)
    assert got.shape == (13, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_k_larger_than_the_bank_uses_the_whole_bank() -> None:
    query, bank, labels = _data(queries=5, bank=6, dim=4, classes=3, seed=1)
    got = knn_predict(query, bank, labels, 3, k=500, temperature=0.2)
    expected = _reference(query, bank, labels, 3, k=6, temperature=0.2)
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
def test_bad_temperature_raises(temperature: float) -> None:
    query, bank, labels = _data(queries=2, bank=3, dim=2, classes=2)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(query, bank, labels, 2, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        KNNMonitor(temperature=temperature)


def test_monitor_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNMonitor(k=0)
