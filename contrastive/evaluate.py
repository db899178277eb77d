"""The linear-probe job: pretrained backbone -> (cached) features -> linear head -> test.

``scripts/linear_probe.py`` and ``contrastive-linear-probe`` call :func:`linear_probe`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from contrastive.backbones import feature_dim, in_channels
from contrastive.checkpoints import load_pretrained
from contrastive.errors import ConfigError
from contrastive.methods.linear_probe import LinearProbe, evaluate_outputs
from contrastive.train import build_logger, finish_job
from contrastive.transforms import ViewRecipe, eval_images

log = logging.getLogger(__name__)


class EvalImages(nn.Module):
    """Unaugmented images as the backbone saw them in pretraining: [0, 1], resized to the
    recipe's size, normalised with its statistics."""

    def __init__(self, recipe: ViewRecipe) -> None:
        super().__init__()
        self.recipe = recipe

    def forward(self, images: Tensor) -> Tensor:
        return eval_images(images, self.recipe)


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader[Any]) -> tuple[Tensor, Tensor]:
    """Features ``(N, F)`` and labels ``(N,)`` of every batch, in loader order."""
    encoder.eval()
    device = next(encoder.parameters()).device
    features, labels = [], []
    for images, targets in loader:
        features.append(encoder(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


def check_data(datamodule: Any, backbone: nn.Module, info: dict[str, Any], cfg: DictConfig) -> None:
    channels = datamodule.sample_shape()[0]
    if channels == 3 and in_channels(backbone) == 1:
        raise ConfigError(
            f"{info['path']} holds a 1-channel (grayscale) backbone but data "
            f"'{cfg.data.dataset}' has 3-channel images"
        )
    largest = int(datamodule.labels().max())
    if largest >= cfg.data.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.data.num_classes} but the labels of '{cfg.data.dataset}' "
            f"go up to {largest}; set data.num_classes={largest + 1}"
        )


def save_confusion_png(confusion: Tensor, classes: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.5 * len(classes))
    figure, axes = plt.subplots(figsize=(size + 1, size))
    rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("linear probe: confusion (row-normalised)")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def linear_probe(cfg: DictConfig) -> dict[str, Any]:
    """Train and test a linear head on a pretrained backbone; return the metrics."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    backbone, info = load_pretrained(cfg.pretrained)
    recipe = ViewRecipe(**info["recipe"])
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    check_data(datamodule, backbone, info, cfg)
    encoder = nn.Sequential(EvalImages(recipe), backbone)
    probe_cfg = cfg.probe
    train_loader, test_loader = datamodule.labelled_loaders(probe_cfg.batch_size)
    cached = probe_cfg.cache_features and not probe_cfg.finetune
    if cached:  # the frozen features once, then the head trains on them alone
        train_features = TensorDataset(*extract_features(encoder, train_loader))
        test_features = TensorDataset(*extract_features(encoder, test_loader))
        train_loader = DataLoader(train_features, probe_cfg.batch_size, shuffle=True)
        test_loader = DataLoader(test_features, probe_cfg.batch_size)
    model = LinearProbe(
        input_dim=feature_dim(backbone),
        num_outputs=int(cfg.data.num_classes),
        objective=probe_cfg.objective,
        lr=probe_cfg.lr,
        weight_decay=probe_cfg.weight_decay,
        label_smoothing=probe_cfg.label_smoothing,
        backbone=None if cached else encoder,
        finetune=probe_cfg.finetune,
        backbone_lr=probe_cfg.backbone_lr,
        max_epochs=int(cfg.trainer.max_epochs),
    )
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=build_logger(cfg), callbacks=[])
    trainer.fit(model, train_dataloaders=train_loader)
    trainer.test(model, dataloaders=test_loader, verbose=False)

    outputs = torch.cat([o for o, _ in model.test_outputs])
    labels = torch.cat([t for _, t in model.test_outputs])
    results = evaluate_outputs(outputs, labels, model.objective)
    metrics: dict[str, Any] = {k: float(v) for k, v in results.items() if v.numel() == 1}
    classes = datamodule.classes or tuple(str(i) for i in range(model.num_outputs))
    if "probe/confusion" in results:
        confusion = results["probe/confusion"]
        per_class = confusion.diagonal().float() / confusion.sum(dim=1).clamp(min=1)
        for name, accuracy in zip(classes, per_class.tolist(), strict=False):
            metrics[f"probe/test_class_top1/{name}"] = accuracy
        save_confusion_png(confusion, classes, output_dir / "confusion_matrix.png")
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(
                    "probe/confusion_matrix", [str(output_dir / "confusion_matrix.png")]
                )
    metrics["probe/test_samples"] = int(labels.numel())
    metrics["time/total_seconds"] = time.perf_counter() - started
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(
        f"\nLinear probe ({info['path']}): "
        + ", ".join(
            f"{k}={metrics[k]:.4f}" for k in ("probe/test_top1", "probe/test_top5") if k in metrics
        )
    )
    print(f"Run directory: {output_dir.resolve()}")
    finish_job(trainer, metrics)
    return metrics
