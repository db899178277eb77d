"""Callbacks for the fault-tolerance tests, added with ``+callbacks.<name>=...``: a real
signal after a given step, and the weights around one step."""

from __future__ import annotations

import os
import signal
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch


class SignalAtStep(pl.Callback):
    """``os.kill(own pid, signal)`` once, when ``global_step`` reaches ``step`` on ``rank``
    (every rank when ``rank`` is ``None``)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", rank: int | None = None):
        self.step = step
        self.signum = signal.Signals[signal_name]
        self.rank = rank
        self.sent = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.sent or trainer.global_step < self.step:
            return
        if self.rank is None or trainer.global_rank == self.rank:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class WeightsAroundStep(pl.Callback):
    """Copies of every parameter just before and just after training batch ``batch_idx``
    of the first epoch, in :attr:`seen` (``"before"`` and ``"after"``)."""

    seen: ClassVar[dict[str, dict[str, torch.Tensor]]] = {}

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def _copy(self, pl_module: pl.LightningModule, key: str) -> None:
        WeightsAroundStep.seen[key] = {
            name: p.detach().clone() for name, p in pl_module.named_parameters()
        }

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch_idx:
            self._copy(pl_module, "before")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.current_epoch == 0 and args[-1] == self.batch_idx:
            self._copy(pl_module, "after")


class NaNGradientAtStep(pl.Callback):
    """After the backward pass of ``step``, on ``rank`` only, one gradient becomes NaN (the
    other ranks' gradients stay finite: the guard must still stop them all)."""

    def __init__(self, step: int, rank: int = 0) -> None:
        self.step = step
        self.rank = rank

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


class TouchOnLoad:
    """Unpickling this creates ``path``: a stand-in for a checkpoint that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mknod, (self.path,))
