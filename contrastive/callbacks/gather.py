"""Collect per-sample evaluation outputs from every process, in dataset order, once each."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor


def gather_in_order(pl_module: pl.LightningModule, local: Tensor, num_samples: int) -> Tensor:
    """All of an evaluation set's rows, gathered from every rank, in dataset order.

    Lightning's ``DistributedSampler`` (``shuffle=False``) gives rank ``r`` the indices
    ``r, r + W, r + 2W, ...`` and pads the tail by repeating the first samples so every
    rank holds the same count. Gathering ``(W, n, ...)``, interleaving it back and cutting
    it at ``num_samples`` restores each sample exactly once. On one process it returns
    ``local[:num_samples]``.
    """
    world_size = pl_module.trainer.world_size if pl_module._trainer is not None else 1
    if world_size > 1:
        gathered = torch.as_tensor(pl_module.all_gather(local))  # (W, n, ...)
        local = gathered.transpose(0, 1).flatten(0, 1)  # (n * W, ...) in dataset order
    return local[:num_samples]


def eval_set_size(trainer: pl.Trainer, dataloader_idx: int) -> int:
    """How many samples validation loader ``dataloader_idx`` covers, after
    ``limit_val_batches``, summed over processes."""
    loaders = trainer.val_dataloaders
    loader: Any = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    size = len(loader.dataset)
    batches = trainer.num_val_batches[dataloader_idx]
    if loader.batch_size is not None and batches != float("inf"):
        size = min(size, int(batches) * loader.batch_size * trainer.world_size)
    return size
