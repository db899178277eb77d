"""The evaluation jobs on a pretrained backbone.

- :func:`linear_probe` (``scripts/linear_probe.py``): (cached) frozen features -> linear
  head -> test; writes the head (``probe_head.pt``) and the backbone it was trained on
  beside it, so the run directory is a distillation teacher.
- :func:`knn_eval` (``scripts/knn_eval.py``): the kNN accuracy of the pretraining monitor,
  on a saved backbone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from contrastive.backbones import build_backbone, feature_dim, in_channels, save_backbone
from contrastive.callbacks.knn import knn_top1
from contrastive.checkpoints import (
    PROBE_HEAD_FILE,
    load_pretrained,
    save_probe_head,
    trusts_checkpoints,
)
from contrastive.errors import ConfigError
from contrastive.methods.linear_probe import LinearProbe, evaluate_outputs
from contrastive.train import build_logger, finish_job, provenance
from contrastive.transforms import ImageInputs, ViewRecipe

log = logging.getLogger(__name__)


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


def check_data(datamodule: Any, backbone: nn.Module, info: dict[str, Any], cfg: DictConfig) -> None:
    channels = datamodule.sample_shape()[0]
    if channels == 3 and in_channels(backbone) == 1:
        raise ConfigError(
            f"{info['path']} holds a 1-channel (grayscale) backbone but data "
            f"'{datamodule.dataset}' has 3-channel images"
        )
    largest = int(datamodule.labels().max())
    if largest >= datamodule.num_classes:
        raise ConfigError(
            f"data.num_classes={datamodule.num_classes} but the labels of '{datamodule.dataset}' "
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


def pixel_backbone(datamodule: Any) -> tuple[nn.Module, dict[str, Any]]:
    """``pretrained=pixels``: the raw-pixel baseline, images scaled to [0, 1] and flattened
    (the probe head's affine-free BatchNorm standardises each pixel)."""
    channels, height, width = datamodule.sample_shape()
    if height != width:
        raise ConfigError(f"pretrained=pixels needs square images, got {height}x{width}")
    backbone = build_backbone("pixels", in_channels=channels, image_size=height)
    recipe = ViewRecipe(
        image_size=height, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels
    )
    return backbone, {"recipe": asdict(recipe), "path": "pixels", "spec": backbone.backbone_spec}


def train_probe(
    backbone: nn.Module,
    recipe: ViewRecipe,
    datamodule: Any,
    probe_cfg: DictConfig,
    num_outputs: int,
    trainer: pl.Trainer,
) -> tuple[LinearProbe, Tensor, Tensor]:
    """Train a linear head on ``backbone`` (frozen unless ``probe_cfg.finetune``) and test it.

    Frozen features are computed once and cached unless augmentation is asked for
    (``probe_cfg.augment``) or the backbone is fine-tuned. Returns the trained probe and its
    test outputs ``(N, num_outputs)`` with the test labels.
    """
    crop_scale = tuple(probe_cfg.crop_scale) if probe_cfg.get("augment") else None
    images = ImageInputs(recipe, crop_scale)
    train_loader, test_loader = datamodule.labelled_loaders(probe_cfg.batch_size)
    cached = probe_cfg.cache_features and not probe_cfg.finetune and crop_scale is None
    if cached:  # the frozen features once, then the head trains on them alone
        encoder = nn.Sequential(images, backbone)
        train_features = TensorDataset(*extract_features(encoder, train_loader))
        test_features = TensorDataset(*extract_features(encoder, test_loader))
        train_loader = DataLoader(train_features, probe_cfg.batch_size, shuffle=True)
        test_loader = DataLoader(test_features, probe_cfg.batch_size)
    model = LinearProbe(
        input_dim=feature_dim(backbone),
        num_outputs=num_outputs,
        objective=probe_cfg.objective,
        lr=probe_cfg.lr,
        weight_decay=probe_cfg.weight_decay,
        label_smoothing=probe_cfg.label_smoothing,
        backbone=None if cached else backbone,
        images=None if cached else images,
        finetune=probe_cfg.finetune,
        backbone_lr=probe_cfg.backbone_lr,
        max_epochs=int(trainer.max_epochs or 1),
    )
    trainer.fit(model, train_dataloaders=train_loader)
    trainer.test(model, dataloaders=test_loader, verbose=False)
    outputs = torch.cat([o for o, _ in model.test_outputs])
    labels = torch.cat([t for _, t in model.test_outputs])
    return model, outputs, labels


def linear_probe(cfg: DictConfig) -> dict[str, Any]:
    """Train and test a linear head on a pretrained backbone; return the metrics."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    if cfg.pretrained == "pixels":
        backbone, info = pixel_backbone(datamodule)
    else:
        backbone, info = load_pretrained(cfg.pretrained, trust=trusts_checkpoints(cfg))
    recipe = ViewRecipe(**info["recipe"])
    check_data(datamodule, backbone, info, cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=build_logger(cfg, info), callbacks=[])
    num_outputs = int(datamodule.num_classes)
    model, outputs, labels = train_probe(
        backbone, recipe, datamodule, cfg.probe, num_outputs, trainer
    )
    results = evaluate_outputs(outputs, labels, model.objective)
    metrics: dict[str, Any] = {k: float(v) for k, v in results.items() if v.numel() == 1}
    classes = datamodule.classes or tuple(str(i) for i in range(num_outputs))
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
    if trainer.is_global_zero:
        # The run directory is self-contained: the backbone the head was trained on (the
        # fine-tuned one with probe.finetune=true) and the head, for scripts/distill.py.
        save_backbone(
            backbone.cpu(),
            str(output_dir / "backbone.pt"),
            recipe=info["recipe"],
            dataset=str(datamodule.dataset),
            num_classes=num_outputs,
            source=info["path"],
            finetuned=bool(cfg.probe.finetune),
            **provenance(cfg, info),
        )
        save_probe_head(
            model.head.cpu(),
            output_dir / PROBE_HEAD_FILE,
            objective=model.objective,
            classes=list(classes),
            dataset=str(datamodule.dataset),
            metrics={k: v for k, v in metrics.items() if "class_top1" not in k},
        )
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        print(
            f"\nLinear probe ({info['path']}): "
            + ", ".join(
                f"{k}={metrics[k]:.4f}"
                for k in ("probe/test_top1", "probe/test_top5")
                if k in metrics
            )
        )
        print(f"Run directory: {output_dir.resolve()}")
    finish_job(trainer.loggers, metrics, trainer.is_global_zero)
    return metrics


def knn_eval(cfg: DictConfig) -> dict[str, Any]:
    """kNN accuracy of a saved backbone: the pretraining monitor's metric (cosine
    similarity, ``k`` neighbours, ``exp(s / temperature)`` votes, same bank and test set),
    as ``knn/test_top1``."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    backbone, info = load_pretrained(cfg.pretrained, trust=trusts_checkpoints(cfg))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    check_data(datamodule, backbone, info, cfg)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = nn.Sequential(ImageInputs(ViewRecipe(**info["recipe"])), backbone).to(device)
    bank_loader, test_loader = datamodule.val_dataloader()
    bank, bank_labels = extract_features(encoder, bank_loader)
    test, test_labels = extract_features(encoder, test_loader)
    top1, voters = knn_top1(bank, bank_labels, test, test_labels, cfg.knn.k, cfg.knn.temperature)
    metrics: dict[str, Any] = {
        "knn/test_top1": float(top1),
        "knn/k": int(cfg.knn.k),
        "knn/temperature": float(cfg.knn.temperature),
        "knn/bank_samples": voters,
        "knn/test_samples": int(test_labels.numel()),
        "time/total_seconds": time.perf_counter() - started,
    }
    logger = build_logger(cfg, info)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"\nkNN ({info['path']}): knn/test_top1={metrics['knn/test_top1']:.4f}")
    print(f"Run directory: {output_dir.resolve()}")
    finish_job([logger] if isinstance(logger, pl.loggers.Logger) else [], metrics)
    return metrics
