"""Weighted k-nearest-neighbour accuracy of backbone features (Wu et al., 2018)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.callbacks.gather import eval_set_size, gather_in_order


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a cosine-similarity, temperature-weighted kNN vote.

    For query ``q`` with neighbours ``n_1..n_k`` (highest cosine similarity ``s_j`` in the
    bank), ``score_c(q) = sum_j exp(s_j / temperature) * [label(n_j) = c]``.
    ``query`` (Q, D), ``bank`` (M, D), ``bank_labels`` (M,) -> scores (Q, num_classes).

    Examples:
        >>> bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> labels = torch.tensor([0, 0, 1])
        >>> knn_predict(torch.tensor([[1.0, 0.05]]), bank, labels, 2, k=2).argmax(1).tolist()
        [0]
    """
    if temperature <= 0:
        raise ValueError(f"knn temperature must be > 0, got {temperature}")
    k = min(k, bank.shape[0])
    bank = F.normalize(bank.float(), dim=1)
    scores = []
    for start in range(0, query.shape[0], chunk_size):
        chunk = F.normalize(query[start : start + chunk_size].float(), dim=1)
        similarity = chunk @ bank.T  # (q, M)
        top_sim, top_idx = similarity.topk(k, dim=1)  # (q, k)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(chunk.shape[0], num_classes, device=chunk.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)  # (q, C)
        scores.append(votes)
    return torch.cat(scores)


def knn_top1(
    bank: Tensor,
    bank_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> tuple[Tensor, int]:
    """Top-1 accuracy of :func:`knn_predict` on ``test`` against ``bank``, and how many bank
    samples voted: those with a label ``< 0`` (unlabelled) cannot vote."""
    keep = bank_labels >= 0
    num_classes = int(max(bank_labels.max(), test_labels.max()).item()) + 1
    scores = knn_predict(test, bank[keep], bank_labels[keep], num_classes, k, temperature)
    return (scores.argmax(dim=1) == test_labels).float().mean(), int(keep.sum())


class KNNMonitor(pl.Callback):
    """Logs ``val/knn_top1``: kNN accuracy of test features against the training bank.

    Expects validation loader 0 to be the labelled bank and loader 1 the test set, and
    ``validation_step`` to return ``{"features", "labels"}``. Features are gathered from
    every process, so the whole test set is scored once.
    """

    def __init__(self, k: int = 200, temperature: float = 0.1) -> None:
        if k < 1:
            raise ValueError(f"knn k must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"knn temperature must be > 0, got {temperature}")
        self.k = k
        self.temperature = temperature
        self._features: dict[int, list[Tensor]] = {0: [], 1: []}
        self._labels: dict[int, list[Tensor]] = {0: [], 1: []}
        self.num_test_samples = 0
        self.last_epoch = -1

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._features = {0: [], 1: []}
        self._labels = {0: [], 1: []}

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._features[dataloader_idx].append(outputs["features"].detach())
        self._labels[dataloader_idx].append(outputs["labels"].detach())

    def _gathered(self, pl_module: pl.LightningModule, idx: int) -> tuple[Tensor, Tensor]:
        size = eval_set_size(pl_module.trainer, idx)
        features = gather_in_order(pl_module, torch.cat(self._features[idx]), size)
        labels = gather_in_order(pl_module, torch.cat(self._labels[idx]), size)
        return features, labels

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._features[1] or not self._features[0]:
            return
        bank, bank_labels = self._gathered(pl_module, 0)
        test, test_labels = self._gathered(pl_module, 1)
        top1, _ = knn_top1(bank, bank_labels, test, test_labels, self.k, self.temperature)
        self.num_test_samples = int(test_labels.numel())
        self.last_epoch = trainer.current_epoch
        pl_module.log("val/knn_top1", top1, rank_zero_only=True, sync_dist=False)
        self._features = {0: [], 1: []}
        self._labels = {0: [], 1: []}
