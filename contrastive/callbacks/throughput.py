"""Training throughput in views per second, shown on the progress bar."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl


class ViewThroughput(pl.Callback):
    """Logs ``train/views_per_sec``: views processed per wall-clock second, batch to batch
    (data loading, augmentation, forward, backward and the optimiser step included),
    smoothed with an exponential moving average and summed over processes."""

    def __init__(self, smoothing: float = 0.9) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"throughput smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self._last: float | None = None
        self.views_per_sec: float | None = None
        self.rates: list[float] = []  # every batch's instantaneous rate, for benchmarks

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            views = outputs["num_views"] * trainer.world_size
            rate = views / max(now - self._last, 1e-9)
            self.rates.append(rate)
            if self.views_per_sec is None:
                self.views_per_sec = rate
            else:
                self.views_per_sec = (
                    self.smoothing * self.views_per_sec + (1 - self.smoothing) * rate
                )
            pl_module.log(
                "train/views_per_sec",
                self.views_per_sec,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
                rank_zero_only=True,
            )
        self._last = now
