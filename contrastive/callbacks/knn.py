"""The kNN monitor: weighted k-nearest-neighbour accuracy of backbone features during
pretraining (Wu et al., 2018), scored by :func:`contrastive.metrics.knn_top1`."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from contrastive.callbacks.gather import eval_set_size, gather_in_order
from contrastive.metrics import knn_top1


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
