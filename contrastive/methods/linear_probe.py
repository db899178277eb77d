"""Linear evaluation: a linear head on a frozen (or fine-tuned) backbone."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, TensorDataset

from contrastive.backbones import feature_dim
from contrastive.heads import LinearHead
from contrastive.losses import binary_cross_entropy_with_logits, cross_entropy, l2_loss
from contrastive.transforms import ImageInputs, ViewRecipe

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
EpochScheduler = Callable[[Optimizer, int], LRScheduler]

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

    ``optimizer`` builds the optimiser from the head's parameters (a Hydra partial; its
    ``lr`` is the head's rate); a fine-tuned backbone is added as a second group at
    ``backbone_lr`` (``None``: the head's rate / 10). ``scheduler`` is called with the
    optimiser and the trainer's ``max_epochs`` and stepped once an epoch (``None``: a
    constant rate).
    """

    def __init__(
        self,
        input_dim: int,
        num_outputs: int,
        optimizer: OptimizerFactory,
        scheduler: EpochScheduler | None = None,
        objective: Objective = "softmax",
        label_smoothing: float = 0.0,
        backbone: nn.Module | None = None,
        images: nn.Module | None = None,
        finetune: bool = False,
        backbone_lr: float | None = None,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(
                f"probe objective must be one of {list(OBJECTIVES)}, got {objective!r}"
            )
        self.head = LinearHead(input_dim, num_outputs, batch_norm=True)
        self.objective = objective
        self.num_outputs = num_outputs
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_smoothing = label_smoothing
        self.backbone = backbone
        self.images = images
        self.finetune = finetune
        self.backbone_lr = backbone_lr
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
        optimizer = self.optimizer_factory([{"params": self.head.parameters()}])
        if self.backbone is not None and self.finetune:
            lr = self.backbone_lr
            optimizer.add_param_group(
                {
                    "params": self.backbone.parameters(),
                    "lr": optimizer.defaults["lr"] / 10 if lr is None else lr,
                }
            )
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, int(self.trainer.max_epochs or 1))
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader[Any]) -> tuple[Tensor, Tensor]:
    """Features ``(N, F)`` and labels ``(N,)`` of every batch, in loader order."""
    encoder.eval()
    parameter = next(encoder.parameters(), None)  # none: e.g. the raw-pixel "backbone"
    device = parameter.device if parameter is not None else torch.device("cpu")
    features, labels = [], []
    for images, targets in loader:
        features.append(encoder(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


class LinearEvaluation:
    """The linear-evaluation protocol: how a :class:`LinearProbe` is built, fed and
    tested, shared by the linear-probe job and the distillation job's scoring of a
    student (``conf/probe/``).

    Frozen features are computed once and cached (``cache_features``) unless augmentation
    is asked for (``augment``: random resized crops of ``crop_scale`` and flips, on the
    fly) or the backbone is fine-tuned (``finetune``). ``epochs`` is what the jobs train
    the head for (their trainer's ``max_epochs``); the other arguments are
    :class:`LinearProbe`'s.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory,
        scheduler: EpochScheduler | None = None,
        objective: Objective = "softmax",
        label_smoothing: float = 0.0,
        finetune: bool = False,
        backbone_lr: float | None = None,
        epochs: int = 30,
        batch_size: int = 512,
        cache_features: bool = True,
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.65, 1.0),
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(
                f"probe.objective must be one of {list(OBJECTIVES)}, got {objective!r}"
            )
        if epochs < 1:
            raise ValueError(f"probe.epochs must be >= 1, got {epochs}")
        if batch_size < 1:
            raise ValueError(f"probe.batch_size must be >= 1, got {batch_size}")
        self.finetune = finetune
        self.epochs = epochs
        self.batch_size = batch_size
        self.cache_features = cache_features
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1])) if augment else None
        self.probe = functools.partial(
            LinearProbe,
            optimizer=optimizer,
            scheduler=scheduler,
            objective=objective,
            label_smoothing=label_smoothing,
            finetune=finetune,
            backbone_lr=backbone_lr,
        )

    def fit(
        self,
        backbone: nn.Module,
        recipe: ViewRecipe,
        datamodule: Any,
        num_outputs: int,
        trainer: pl.Trainer,
    ) -> tuple[LinearProbe, Tensor, Tensor]:
        """Train a head on ``backbone`` with ``trainer``, test it; return the probe and its
        test outputs ``(N, num_outputs)`` with the test labels ``(N,)``."""
        images = ImageInputs(recipe, self.crop_scale)
        train_loader, test_loader = datamodule.labelled_loaders(self.batch_size)
        cached = self.cache_features and not self.finetune and self.crop_scale is None
        if cached:  # the frozen features once, then the head trains on them alone
            encoder = nn.Sequential(images, backbone)
            train_features = TensorDataset(*extract_features(encoder, train_loader))
            test_features = TensorDataset(*extract_features(encoder, test_loader))
            train_loader = DataLoader(train_features, self.batch_size, shuffle=True)
            test_loader = DataLoader(test_features, self.batch_size)
        model = self.probe(
            input_dim=feature_dim(backbone),
            num_outputs=num_outputs,
            backbone=None if cached else backbone,
            images=None if cached else images,
        )
        trainer.fit(model, train_dataloaders=train_loader)
        trainer.test(model, dataloaders=test_loader, verbose=False)
        outputs = torch.cat([o for o, _ in model.test_outputs])
        labels = torch.cat([t for _, t in model.test_outputs])
        return model, outputs, labels


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
