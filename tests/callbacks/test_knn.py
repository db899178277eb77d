"""Tests of the kNN monitor callback (its vote, :func:`contrastive.metrics.knn_predict`, is
tested in ``tests/test_metrics.py``)."""

from __future__ import annotations

import pytest

from contrastive.callbacks.knn import KNNMonitor


@pytest.mark.parametrize("temperature", [0.0, -0.1])
def test_bad_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        KNNMonitor(temperature=temperature)


def test_monitor_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        KNNMonitor(k=0)
