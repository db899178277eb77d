"""What to do when the loss or a gradient stops being a finite number."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.optim import Optimizer

from contrastive import distributed
from contrastive.errors import TrainingHalted

log = logging.getLogger(__name__)

POLICIES = ("stop", "skip")


class NonFiniteGuard(pl.Callback):
    """Checks the loss and the gradients before every optimiser step; all ranks agree on
    the verdict (one all-reduce of one number), so they act together.

    Args:
        policy: ``stop``: write ``checkpoints/nonfinite_step<N>.ckpt`` (the weights and
            optimiser state before the bad step) and stop with an error that names the
            step. ``skip``: drop the step's gradients, so the optimiser leaves the weights
            and its own state as they were (the learning-rate schedule still advances),
            and stop as ``stop`` does after more than ``max_skips`` skipped steps.
        max_skips: how many steps ``skip`` may drop in one run.
    """

    def __init__(self, policy: str = "stop", max_skips: int = 10) -> None:
        if policy not in POLICIES:
            raise ValueError(f"nonfinite policy must be one of {POLICIES}, got {policy!r}")
        if max_skips < 0:
            raise ValueError(f"nonfinite max_skips must be >= 0, got {max_skips}")
        self.policy = policy
        self.max_skips = max_skips
        self.skipped = 0
        self._loss: Tensor | None = None

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor
    ) -> None:
        self._loss = loss.detach()

    def _bad(self, pl_module: pl.LightningModule) -> tuple[bool, str, str]:
        """Whether any rank's loss or gradient is not finite, what it was, and the loss.
        One host-device sync per step (and one all-reduce under DDP); the details are
        read only after a bad step."""
        loss = self._loss
        self._loss = None
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        loss_ok = torch.isfinite(loss).all() if loss is not None else torch.tensor(True)
        grads_ok = (
            torch.isfinite(torch.nn.utils.get_total_norm(grads)) if grads else torch.tensor(True)
        )
        local_bad = not bool(loss_ok.to(grads_ok.device) & grads_ok)  # the one sync
        if not distributed.max_over_ranks(float(local_bad), pl_module.device):
            return False, "", ""
        what = (
            "the loss"
            if not bool(loss_ok)
            else "a gradient"
            if not bool(grads_ok)
            else "another rank's loss or gradient"
        )
        return True, what, f" (loss {float(loss):.4g})" if loss is not None else ""

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        bad, what, loss = self._bad(pl_module)
        if not bad:
            return
        step = trainer.global_step
        if self.policy == "skip" and self.skipped < self.max_skips:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)  # the optimiser skips parameters with no grad
            log.warning(
                "step %d: %s is not finite%s; step skipped (%d of at most %d)",
                step,
                what,
                loss,
                self.skipped,
                self.max_skips,
            )
            return
        path = Path(trainer.default_root_dir) / "checkpoints" / f"nonfinite_step{step}.ckpt"
        trainer.save_checkpoint(path)  # the weights before this step; every rank takes part
        limit = f" after {self.skipped} skipped step(s)" if self.policy == "skip" else ""
        raise TrainingHalted(
            f"step {step}: {what} is not finite (NaN or Inf){limit}; stopped before the "
            f"optimiser step. The weights before it are in {path}. Lower optim.optimizer.lr, "
            "set trainer.gradient_clip_val, or use callbacks.nonfinite.policy=skip"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
