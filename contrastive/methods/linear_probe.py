"""Linear evaluation: a linear head on a frozen (or fine-tuned) backbone."""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.heads import LinearHead
from contrastive.losses import binary_cross_entropy_with_logits, cross_entropy, l2_loss

Objective = Literal["softmax", "sigmoid", "l2"]
OBJECTIVES: tuple[str, ...] = ("softmax", "sigmoid", "l2")


class LinearProbe(pl.LightningModule):
    """A linear head trained on backbone features.

    ``objective`` picks the output layer and loss: ``softmax`` (cross-entropy, optional
    label smoothing; class-index targets), ``sigmoid`` (binary cross-entropy per output;
    multi-hot float targets, or class indices turned one-hot), ``l2`` (squared error on
    float targets, or on one-hot class indices: a least-squares classifier).

    With ``backbone=None`` the inputs are precomputed features ``(B, input_dim)``.
    Otherwise ``images`` (e.g. :class:`~contrastive.transforms.ImageInputs`, which augments
    in training only) turns raw batches into backbone inputs; the backbone is frozen (eval
    mode, no gradient) unless ``finetune=True``.
    """

    def __init__(
        self,
        input_dim: int,
        num_outputs: int,
        objective: Objective = "softmax",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        label_smoothing: float = 0.0,
        backbone: nn.Module | None = None,
        images: nn.Module | None = None,
        finetune: bool = False,
        backbone_lr: float | None = None,
        max_epochs: int = 1,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(
                f"probe objective must be one of {list(OBJECTIVES)}, got {objective!r}"
            )
        if lr <= 0:
            raise ValueError(f"probe lr must be > 0, got {lr}")
        self.head = LinearHead(input_dim, num_outputs, batch_norm=True)
        self.objective = objective
        self.num_outputs = num_outputs
        self.lr = lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.backbone = backbone
        self.images = images
        self.finetune = finetune
        self.backbone_lr = backbone_lr if backbone_lr is not None else lr / 10
        self.max_epochs = max_epochs
        if backbone is not None and not finetune:
            backbone.requires_grad_(False)
        self.test_outputs: list[tuple[Tensor, Tensor]] = []

    def features(self, inputs: Tensor) -> Tensor:
        if self.backbone is None:
            return inputs
        if self.images is not None:
            inputs = self.images(inputs)
        if self.finetune:
            return self.backbone(inputs)
        self.backbone.eval()  # frozen: BatchNorm statistics must not move either
        with torch.no_grad():
            return self.backbone(inputs)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.features(inputs))

    def targets(self, labels: Tensor) -> Tensor:
        if self.objective == "softmax" or labels.is_floating_point():
            return labels
        return F.one_hot(labels, self.num_outputs).float()

    def loss(self, outputs: Tensor, labels: Tensor) -> Tensor:
        targets = self.targets(labels)
        if self.objective == "softmax":
            return cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        if self.objective == "sigmoid":
            return binary_cross_entropy_with_logits(outputs, targets)
        return l2_loss(outputs, targets)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = batch
        loss = self.loss(self(inputs), labels)
        self.log("probe/train_loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_test_epoch_start(self) -> None:
        self.test_outputs = []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        self.test_outputs.append((self(inputs).float().cpu(), labels.cpu()))

    def on_test_epoch_end(self) -> None:
        outputs = torch.cat([o for o, _ in self.test_outputs])
        labels = torch.cat([t for _, t in self.test_outputs])
        for key, value in evaluate_outputs(outputs, labels, self.objective).items():
            if value.numel() == 1:
                self.log(key, value)

    def configure_optimizers(self) -> Any:
        groups: list[dict[str, Any]] = [{"params": self.head.parameters(), "lr": self.lr}]
        if self.backbone is not None and self.finetune:
            groups.append({"params": self.backbone.parameters(), "lr": self.backbone_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def evaluate_outputs(outputs: Tensor, labels: Tensor, objective: str) -> dict[str, Tensor]:
    """Test metrics of a probe's outputs ``(N, K)`` against labels.

    ``probe/test_top1`` (for every objective, from the arg-max when the labels are class
    indices), ``probe/test_top5`` and ``probe/test_nll`` (softmax), ``probe/test_bce``
    (sigmoid), ``probe/test_mse`` (l2), and ``probe/confusion`` ``(K, K)`` (rows: true
    class, columns: predicted) for class-index labels.
    """
    metrics: dict[str, Tensor] = {}
    num_outputs = outputs.shape[1]
    if labels.is_floating_point():  # multi-label / regression targets
        if objective == "sigmoid":
            metrics["probe/test_bce"] = binary_cross_entropy_with_logits(outputs, labels)
            metrics["probe/test_label_accuracy"] = ((outputs > 0) == (labels > 0.5)).float().mean()
        else:
            metrics["probe/test_mse"] = l2_loss(outputs, labels)
        return metrics
    predictions = outputs.argmax(dim=1)
    metrics["probe/test_top1"] = (predictions == labels).float().mean()
    if objective == "softmax":
        top5 = outputs.topk(min(5, num_outputs), dim=1).indices
        metrics["probe/test_top5"] = (top5 == labels[:, None]).any(dim=1).float().mean()
        metrics["probe/test_nll"] = F.cross_entropy(outputs, labels)
    elif objective == "sigmoid":
        one_hot = F.one_hot(labels, num_outputs).float()
        metrics["probe/test_bce"] = binary_cross_entropy_with_logits(outputs, one_hot)
    else:
        metrics["probe/test_mse"] = l2_loss(outputs, F.one_hot(labels, num_outputs).float())
    confusion = torch.zeros(num_outputs, num_outputs, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    metrics["probe/confusion"] = confusion
    return metrics
