"""Progress: Lightning's :class:`~pytorch_lightning.callbacks.RichProgressBar` in a
terminal, and plain log lines when stdout is a file or a pipe (a SLURM log, CI, ``| tee``),
where a redrawn bar leaves only control codes and half lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger(__name__)


class LogProgress(ProgressBar):
    """One log line every ``every_n_steps`` training steps and at each epoch's end: epoch,
    step of the epoch, steps per second and the progress-bar metrics (``train/loss``, ...);
    one line per validation with its metrics. Global rank zero only."""

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._started = time.perf_counter()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        items = self.get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items()
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = batch_idx + 1
        total = self.total_train_batches
        last = isinstance(total, int) and step == total
        if not (self._enabled and trainer.is_global_zero) or (
            step % self.every_n_steps and not last
        ):
            return
        rate = step / max(time.perf_counter() - self._started, 1e-9)
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        log.info(
            "epoch %d/%s step %d/%s (%.2f it/s) %s",
            trainer.current_epoch + 1,
            epochs,
            step,
            total,
            rate,
            self._metrics(trainer, pl_module),
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero) or trainer.sanity_checking:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and getattr(v, "numel", lambda: 1)() == 1
        }
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
        log.info("validation after epoch %d: %s", trainer.current_epoch + 1, shown)


def progress_bar(every_n_steps: int = 50) -> ProgressBar:
    """:class:`RichProgressBar` when stdout is a terminal, else :class:`LogProgress`."""
    if sys.stdout.isatty():
        return RichProgressBar()
    return LogProgress(every_n_steps)
