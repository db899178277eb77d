"""Is pretraining healthy? Alignment, uniformity, effective rank, gradient norm, memory."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer

from contrastive.metrics import alignment, effective_rank, uniformity


def logging_step(trainer: pl.Trainer) -> bool:
    # Lightning's own test for "this step's logged values reach the loggers" (the one
    # LearningRateMonitor relies on); values logged on other steps would be dropped.
    return bool(trainer._logger_connector.should_update_logs)


class TrainingHealth(pl.Callback):
    """On the steps Lightning writes logs (every ``trainer.log_every_n_steps``), logs from
    the step's embeddings (``outputs["embeddings"]``, ``(V, B, D)``):

    - ``train/alignment`` and ``train/uniformity`` (Wang and Isola, 2020) of views 0 and 1;
    - ``train/rankme``, the effective rank of view 0's embeddings (Garrido et al., 2023):
      a falling rank flags dimensional collapse;
    - ``train/grad_norm``, the global L2 norm of the gradients before the optimiser step;
    - ``train/gpu_mem_gib``, peak CUDA memory allocated since the last log (GPU runs).

    Off the logging steps it costs nothing.
    """

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if not logging_step(trainer):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    @torch.no_grad()
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not logging_step(trainer):
            return
        embeddings = outputs.get("embeddings") if isinstance(outputs, dict) else None
        if embeddings is None:
            return
        z1, z2 = embeddings[0].float(), embeddings[1].float()
        stats = {
            "train/alignment": alignment(z1, z2),
            "train/uniformity": uniformity(z1),
            "train/rankme": effective_rank(z1),
        }
        if z1.is_cuda:
            stats["train/gpu_mem_gib"] = torch.tensor(torch.cuda.max_memory_allocated() / 2**30)
            torch.cuda.reset_peak_memory_stats()
        pl_module.log_dict(stats, on_step=True, on_epoch=False)
