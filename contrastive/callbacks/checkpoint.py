"""The checkpoints a pretraining run keeps: ``last.ckpt`` (what ``resume=auto`` continues
from) and the best one by a monitored score.

:class:`LastCheckpoint` writes ``last.ckpt`` at the end of every training epoch (after
validation) and, in between, every ``train_time_interval`` (5 minutes by default) or every
``every_n_train_steps`` steps, each write replacing the one before. A job killed without
warning (SIGKILL, the OOM killer, a lost node, a scheduler's hard limit) therefore loses
at most the steps since the newer of the last epoch end and the last timed save.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


def ends_epoch(trainer: pl.Trainer) -> bool:
    """Whether the training batch just run is its epoch's last: the loader ran out, or
    the epoch is cut there by ``trainer.limit_train_batches`` (then the loader has more,
    but Lightning ends the epoch). A checkpoint for such a step is written at the epoch's
    end, after validation, so a resumed run starts the next epoch."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    return bool(progress.is_last_batch) or progress.current.ready >= trainer.num_training_batches


def last_checkpoint_path(trainer: pl.Trainer) -> Path:
    """Where ``resume=auto`` looks: the ``save_last`` checkpoint callback's ``last.ckpt``,
    else ``<default_root_dir>/checkpoints/last.ckpt``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
            return Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}.ckpt"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at every training-epoch end and every ``train_time_interval`` (or
    ``every_n_train_steps``), one file that each save replaces (atomically, through the
    trainer's :class:`~contrastive.atomic.AtomicCheckpointIO`).

    Lightning's own ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt``
    at an epoch end only when it saved a top-k checkpoint at that step, so with
    ``save_top_k=0`` it never does; this one always does. The timed and step saves are
    Lightning's (``train_time_interval``, ``every_n_train_steps``, mutually exclusive),
    except on an epoch's last step, whose save waits for the epoch end.

    Args:
        dirpath: the run's checkpoint folder.
        train_time_interval: save at the first step end this long after the last save
            (``None``: no timed saves).
        every_n_train_steps: save every this many optimiser steps instead (``None`` or 0:
            none).
    """

    def __init__(
        self,
        dirpath: str | Path,
        train_time_interval: timedelta | None = timedelta(minutes=5),
        every_n_train_steps: int | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            enable_version_counter=False,  # a resumed run overwrites last.ckpt
            save_on_train_epoch_end=True,
            train_time_interval=train_time_interval,
            every_n_train_steps=every_n_train_steps,
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if ends_epoch(trainer):
            return  # on_train_epoch_end writes this step's checkpoint
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_time_checked = time.monotonic()  # the next timed save counts from here


class BestCheckpoint(ModelCheckpoint):
    """Lightning's :class:`ModelCheckpoint`, except that a NaN or infinite monitored value
    is never saved as a "best" checkpoint (Lightning would store it with a score of
    -inf while the top-k is not full). Rotation keeps Lightning's rules: the new best is
    written before the old one is removed, and the checkpoint the run resumed from is
    never removed."""

    def _save_topk_checkpoint(
        self, trainer: pl.Trainer, monitor_candidates: dict[str, Any]
    ) -> None:
        value = monitor_candidates.get(self.monitor) if self.monitor else None
        if value is not None and not torch.isfinite(torch.as_tensor(value)).all():
            log.warning(
                "%s=%s at step %d is not finite: not a best checkpoint",
                self.monitor,
                float(value),
                trainer.global_step,
            )
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
