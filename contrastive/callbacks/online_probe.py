"""A linear classifier trained alongside pretraining on detached backbone features."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.callbacks.gather import eval_set_size, gather_in_order
from contrastive.heads import LinearHead


def _check_num_classes(num_classes: int | None) -> int:
    if num_classes is None:
        raise ValueError("online probe: no num_classes given, and the datamodule has none")
    if num_classes < 2:
        raise ValueError(f"online probe num_classes must be >= 2, got {num_classes}")
    return num_classes


class OnlineLinearProbe(pl.Callback):
    """Trains a linear head on detached features of the training views with cross-entropy
    and logs ``train/online_loss`` and ``val/online_top1`` on the test loader (index 1).

    The head never sends gradients into the backbone. It expects ``training_step`` and
    ``validation_step`` to return ``{"features", "labels"}``; unlabelled samples
    (label -1) are ignored. ``num_classes=None`` takes the trainer's datamodule's
    ``num_classes`` when the head is built (``setup``).
    """

    def __init__(
        self, num_classes: int | None = None, lr: float = 1e-3, weight_decay: float = 0.0
    ) -> None:
        if num_classes is not None:
            _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.head: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self.num_test_samples = 0
        self.last_epoch = -1
        self._predictions: list[Tensor] = []
        self._labels: list[Tensor] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Built once: setup() also runs for trainer.validate() after fit, which must score
        # the head trained during fit, not a fresh one.
        if self.head is None:
            if self.num_classes is None:
                datamodule = getattr(trainer, "datamodule", None)
                self.num_classes = _check_num_classes(getattr(datamodule, "num_classes", None))
            dim = int(pl_module.feature_dim)  # type: ignore[arg-type]
            self.head = LinearHead(dim, self.num_classes, batch_norm=True)
            self.optimizer = torch.optim.AdamW(
                self.head.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )

    def _to_device(self, device: torch.device) -> None:
        assert self.head is not None and self.optimizer is not None
        self.head.to(device)
        if self._pending_state is not None:  # restored from a checkpoint (setup runs first)
            self.head.load_state_dict(self._pending_state["head"])
            self.optimizer.load_state_dict(self._pending_state["optimizer"])  # moves state too
            self._pending_state = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._to_device(pl_module.device)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._to_device(pl_module.device)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        assert self.head is not None and self.optimizer is not None
        features, labels = outputs["features"].detach().float(), outputs["labels"]
        # Rows a diverging step made NaN / Inf (see NonFiniteGuard) must not reach the head.
        finite = torch.isfinite(features).all(dim=1)
        features = torch.where(finite[:, None], features, 0.0)
        keep = (labels >= 0) & finite
        self.head.train()
        with torch.enable_grad():
            logits = self.head(features)
            if bool(keep.any()):
                loss = F.cross_entropy(logits[keep], labels[keep])
            else:  # an unlabelled batch: still take part in the gradient average below
                loss = logits.sum() * 0.0
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if trainer.world_size > 1:  # one head for all ranks: average its gradients, as DDP
            for param in self.head.parameters():
                if param.grad is not None:
                    torch.distributed.all_reduce(param.grad)
                    param.grad /= trainer.world_size
        self.optimizer.step()
        pl_module.log("train/online_loss", loss.detach(), on_step=True, on_epoch=False)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions, self._labels = [], []

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 1 or self.head is None:
            return
        self.head.eval()
        features: Tensor = outputs["features"].float()
        labels: Tensor = outputs["labels"]
        self._predictions.append(self.head(features).argmax(dim=1))
        self._labels.append(labels)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._labels:
            return
        # Gathered in dataset order, so every test sample counts once under DDP.
        size = eval_set_size(trainer, 1)
        predictions = gather_in_order(pl_module, torch.cat(self._predictions), size)
        labels = gather_in_order(pl_module, torch.cat(self._labels), size)
        top1 = (predictions == labels).float().mean()
        pl_module.log("val/online_top1", top1, rank_zero_only=True)
        self.num_test_samples = int(labels.numel())
        self.last_epoch = trainer.current_epoch

    def state_dict(self) -> dict[str, Any]:
        if self.head is None or self.optimizer is None:
            return {}
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._pending_state = state_dict
