"""The optimiser set-up every pretraining method shares: parameter groups (no weight decay
on biases and norms), learning-rate scaling with the global batch, and a per-step schedule
whose length comes from the datamodule's arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from contrastive.errors import ConfigError
from contrastive.optim import param_groups, scale_learning_rate

LR_SCALINGS = ("none", "linear", "sqrt")


def check_lr_scaling(lr_scaling: str) -> str:
    if lr_scaling not in LR_SCALINGS:
        raise ValueError(f"method.lr_scaling must be none, linear or sqrt, got {lr_scaling!r}")
    return lr_scaling


def training_batches(trainer: pl.Trainer) -> int:
    """Training batches per epoch and process, from the datamodule's arithmetic rather
    than by building the loader: Lightning calls ``configure_optimizers`` before it
    restores a checkpoint, and a loader built then would start a resumed epoch from
    its beginning."""
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "train_batches"):
        trainer.estimated_stepping_batches  # noqa: B018 - sets the loader up
        return int(trainer.num_training_batches)
    return int(datamodule.train_batches(trainer.world_size, trainer.limit_train_batches))


def total_steps(trainer: pl.Trainer) -> int:
    """Optimiser steps of the whole run: epochs x steps per epoch, capped by max_steps."""
    steps_per_epoch = math.ceil(training_batches(trainer) / trainer.accumulate_grad_batches)
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    steps = float("inf") if max_epochs in (None, -1) else steps_per_epoch * max(max_epochs, 1)
    if max_steps != -1:
        steps = min(steps, max_steps)
    if not math.isfinite(steps):
        raise ConfigError(
            "the learning-rate schedule needs a finite length: set trainer.max_epochs or "
            "trainer.max_steps (or optim.scheduler=null)"
        )
    return int(steps)


def with_loss(trainable: nn.Module, loss: nn.Module) -> nn.Module:
    """``trainable``, and ``loss`` when it has parameters (a learnt temperature,
    ``loss.learnable_temperature``: 0-dim, so :func:`~contrastive.optim.param_groups` gives
    it no weight decay)."""
    if next(loss.parameters(), None) is None:
        return trainable
    return nn.ModuleList([trainable, loss])


def configure(
    trainer: pl.Trainer,
    trainable: nn.Module,
    optimizer_factory: Callable[[Any], Optimizer],
    scheduler_factory: Callable[..., LRScheduler] | None,
    lr_scaling: str,
) -> Any:
    """What ``configure_optimizers`` returns for the parameters of ``trainable`` (never a
    momentum encoder's: it is not trained by gradients)."""
    optimizer = optimizer_factory(param_groups(trainable))
    if lr_scaling != "none":
        batch_size = int(getattr(getattr(trainer, "datamodule", None), "batch_size", 256))
        global_batch = batch_size * trainer.world_size * trainer.accumulate_grad_batches
        for group in optimizer.param_groups:
            group["lr"] = scale_learning_rate(group["lr"], global_batch, lr_scaling)
    if scheduler_factory is None:
        return optimizer
    steps = total_steps(trainer)
    steps_per_epoch = math.ceil(training_batches(trainer) / trainer.accumulate_grad_batches)
    scheduler = scheduler_factory(
        optimizer, total_steps=steps, steps_per_epoch=max(1, steps_per_epoch)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
