"""The distillation job: a linear-probe run (backbone + head) teaches a smaller student.

``scripts/distill.py`` and ``contrastive-distill`` call :func:`distill`. Two modes:

- ``distill.mode=logits``: the student classifier is trained on the labelled training set
  with ``alpha * T^2 KL + (1 - alpha) * CE``; with ``distill.baseline=true`` (default) the
  same student (same initial weights, same batches) is trained with CE alone in the same
  job, and both are tested against the labels and the teacher.
- ``distill.mode=representation``: SEED, no labels; the student is then scored by a linear
  probe on its features (the probe job's code and settings, ``probe.*``).
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
from omegaconf import DictConfig, OmegaConf
from torch import nn

from contrastive import distributed
from contrastive.backbones import build_backbone, feature_dim, in_channels, save_backbone
from contrastive.checkpoints import (
    PROBE_HEAD_FILE,
    load_pretrained,
    load_teacher,
    save_probe_head,
    trusts_checkpoints,
)
from contrastive.errors import ConfigError
from contrastive.evaluate import check_data, train_probe
from contrastive.methods.distillation import (
    LogitDistillation,
    RepresentationDistillation,
    distillation_metrics,
)
from contrastive.methods.linear_probe import evaluate_outputs
from contrastive.train import build_logger, finish_job, provenance
from contrastive.transforms import ImageInputs, ViewRecipe

log = logging.getLogger(__name__)

MODES = ("logits", "representation")


def build_student(cfg: DictConfig, channels: int) -> nn.Module:
    """The student backbone of ``cfg.student`` (``name`` plus its keyword arguments), taking
    the teacher's number of image channels unless set."""
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.student, resolve=True)  # type: ignore[assignment]
    kwargs.setdefault("in_channels", channels)
    name = kwargs.pop("name", None)
    if name is None:
        raise ConfigError("student.name is missing; e.g. student.name=small_cnn")
    try:
        student = build_backbone(name, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot build student {cfg.student}: {error}") from None
    if in_channels(student) != channels:
        raise ConfigError(
            f"student.in_channels={in_channels(student)} but the teacher's images have "
            f"{channels} channels"
        )
    return student


def _check_config(cfg: DictConfig) -> None:
    mode = cfg.distill.mode
    if mode not in MODES:
        raise ConfigError(f"distill.mode={mode!r}; choose one of {list(MODES)}")
    if not 0.0 <= float(cfg.distill.alpha) <= 1.0:
        raise ConfigError(f"distill.alpha={cfg.distill.alpha} must be in [0, 1]")
    for key, value in (
        ("distill.temperature", cfg.distill.temperature),
        ("representation.student_temperature", cfg.representation.student_temperature),
        ("representation.teacher_temperature", cfg.representation.teacher_temperature),
    ):
        if not float(value) > 0 or value == float("inf"):
            raise ConfigError(f"{key}={value} must be a finite number > 0")


def _check_head(info: dict[str, Any], cfg: DictConfig, datamodule: Any) -> None:
    head = info["head"]
    if head.get("objective", "softmax") != "softmax":
        raise ConfigError(
            f"{head['path']} is a '{head['objective']}' head; logit distillation needs a "
            "softmax (cross-entropy) probe: rerun the probe with probe.objective=softmax"
        )
    if head["num_outputs"] != int(datamodule.num_classes):
        raise ConfigError(
            f"{head['path']} predicts {head['num_outputs']} classes but "
            f"data.num_classes={datamodule.num_classes} ('{datamodule.dataset}'); distil on the "
            "data the teacher's probe was trained on"
        )


def _student_files(
    cfg: DictConfig, student: nn.Module, output_dir: Path, info: dict[str, Any], **extra: Any
) -> None:
    directory = output_dir / "student"
    directory.mkdir(parents=True, exist_ok=True)
    save_backbone(
        student.cpu(),
        str(directory / "backbone.pt"),
        recipe=info["recipe"],
        **provenance(cfg, info),
        **extra,
    )


def _logits(cfg: DictConfig, datamodule: Any, output_dir: Path) -> tuple[dict[str, Any], Any]:
    backbone, head, info = load_teacher(cfg.teacher, trust=trusts_checkpoints(cfg))
    check_data(datamodule, backbone, info, cfg)
    _check_head(info, cfg, datamodule)
    recipe = ViewRecipe(**info["recipe"])
    logger = build_logger(cfg, info)
    teacher = nn.Sequential(backbone, head)
    num_classes = int(datamodule.num_classes)
    crop_scale = tuple(cfg.distill.crop_scale) if cfg.distill.augment else None
    runs = [("student", float(cfg.distill.alpha))]
    if cfg.distill.baseline:
        runs.append(("ce_only", 0.0))
    metrics: dict[str, Any] = {}
    for name, alpha in runs:
        pl.seed_everything(cfg.seed, workers=True)  # same initial weights and batch order
        student = build_student(cfg, recipe.channels)
        model = LogitDistillation(
            student,
            ImageInputs(recipe, crop_scale),
            teacher,
            num_classes,
            alpha=alpha,
            temperature=float(cfg.distill.temperature),
            lr=float(cfg.distill.lr),
            weight_decay=float(cfg.distill.weight_decay),
            warmup_epochs=float(cfg.distill.warmup_epochs),
            name=name,
        )
        train_loader, test_loader = datamodule.labelled_loaders(cfg.distill.batch_size)
        trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[])
        started = time.perf_counter()
        trainer.fit(model, train_dataloaders=train_loader)
        seconds = time.perf_counter() - started
        trainer.test(model, dataloaders=test_loader, verbose=False)
        student_logits, teacher_logits, labels = (
            torch.cat([batch[i] for batch in model.test_outputs]) for i in range(3)
        )
        metrics.update(
            distillation_metrics(student_logits, teacher_logits, labels, f"distill/{name}_")
        )
        metrics[f"distill/{name}_train_seconds"] = seconds
        if name == "student":
            top1 = evaluate_outputs(teacher_logits, labels, "softmax")["probe/test_top1"]
            metrics["distill/teacher_top1"] = float(top1)
            if trainer.is_global_zero:
                _student_files(cfg, student, output_dir, info, dataset=str(datamodule.dataset))
                save_probe_head(
                    model.head.cpu(),
                    output_dir / "student" / PROBE_HEAD_FILE,
                    objective="softmax",
                    classes=list(datamodule.classes or ()),
                    dataset=str(datamodule.dataset),
                )
    # The headline keys the issue names, without the run prefix.
    for key in ("agreement", "test_kl"):
        metrics[f"distill/{key}"] = metrics[f"distill/student_{key}"]
    if "distill/ce_only_top1" in metrics:
        metrics["distill/gain_over_ce_only"] = (
            metrics["distill/student_top1"] - metrics["distill/ce_only_top1"]
        )
    metrics["distill/teacher_params"] = sum(p.numel() for p in teacher.parameters())
    metrics["distill/student_params"] = sum(p.numel() for p in model.student.parameters()) + sum(
        p.numel() for p in model.head.parameters()
    )
    return metrics, logger


def _representation(
    cfg: DictConfig, datamodule: Any, output_dir: Path
) -> tuple[dict[str, Any], Any]:
    # A probe run (its head's test accuracy is shown for comparison) or a pretraining run.
    if (Path(cfg.teacher) / PROBE_HEAD_FILE).is_file():
        backbone, _, info = load_teacher(cfg.teacher, trust=trusts_checkpoints(cfg))
    else:
        backbone, info = load_pretrained(cfg.teacher, trust=trusts_checkpoints(cfg))
    check_data(datamodule, backbone, info, cfg)
    logger = build_logger(cfg, info)
    recipe = ViewRecipe(**info["recipe"])
    crop_scale = tuple(cfg.distill.crop_scale) if cfg.distill.augment else None
    pl.seed_everything(cfg.seed, workers=True)
    student = build_student(cfg, recipe.channels)
    model = RepresentationDistillation(
        student,
        ImageInputs(recipe, crop_scale),
        backbone,
        teacher_dim=feature_dim(backbone),
        queue_size=int(cfg.representation.queue_size),
        student_temperature=float(cfg.representation.student_temperature),
        teacher_temperature=float(cfg.representation.teacher_temperature),
        hidden_dim=int(cfg.representation.hidden_dim),
        lr=float(cfg.distill.lr),
        weight_decay=float(cfg.distill.weight_decay),
        warmup_epochs=float(cfg.distill.warmup_epochs),
    )
    train_loader, _ = datamodule.labelled_loaders(cfg.distill.batch_size)
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=[])
    started = time.perf_counter()
    trainer.fit(model, train_dataloaders=train_loader)
    metrics: dict[str, Any] = {"distill/seed_train_seconds": time.perf_counter() - started}
    student = model.student.eval()
    probe_trainer: pl.Trainer = instantiate(
        cfg.trainer, max_epochs=cfg.probe.epochs, logger=logger, callbacks=[]
    )
    num_classes = int(datamodule.num_classes)
    probe, outputs, labels = train_probe(
        student, recipe, datamodule, cfg.probe, num_classes, probe_trainer
    )
    results = evaluate_outputs(outputs, labels, probe.objective)
    metrics["distill/student_probe_top1"] = float(results["probe/test_top1"])
    teacher_metrics = (
        info["head"].get("metrics", {}) if "head" in info else info.get("metrics") or {}
    )
    if "probe/test_top1" in teacher_metrics:
        metrics["distill/teacher_probe_top1"] = float(teacher_metrics["probe/test_top1"])
    metrics["distill/teacher_params"] = sum(p.numel() for p in backbone.parameters())
    metrics["distill/student_params"] = sum(p.numel() for p in student.parameters())
    if trainer.is_global_zero:
        _student_files(
            cfg, student, output_dir, info, dataset=str(datamodule.dataset), metrics=metrics
        )
    return metrics, logger


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Run one distillation job and return its metrics (also in ``metrics.json``)."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    _check_config(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    job = _logits if cfg.distill.mode == "logits" else _representation
    metrics, logger = job(cfg, datamodule, output_dir)
    metrics["time/total_seconds"] = time.perf_counter() - started
    loggers = [logger] if isinstance(logger, pl.loggers.Logger) else []
    is_global_zero = distributed.rank() == 0
    if is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        shown = (
            "distill/student_top1",
            "distill/ce_only_top1",
            "distill/teacher_top1",
            "distill/agreement",
            "distill/student_probe_top1",
            "distill/teacher_probe_top1",
        )
        print(
            "\nDistillation: " + ", ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics)
        )
        print(f"Run directory: {output_dir.resolve()}")
    finish_job(loggers, metrics, is_global_zero)
    return metrics
