"""The distillation job: a linear-probe run (backbone + head) teaches a smaller student.

``scripts/distill.py`` and ``contrastive-distill`` call :func:`distill`
(``conf/distill.yaml``). The ``distill:`` node picks the method (``conf/distill/``):

- ``distill=logits`` (:class:`~contrastive.methods.LogitDistillation`): the student
  classifier trains on the labelled training set with ``alpha * T^2 KL + (1 - alpha) *
  CE``; with ``baseline=true`` (default) the same student (same initial weights, same
  batches) is also trained with CE alone, and both are tested against the labels and the
  teacher.
- ``distill=representation`` (SEED, :class:`~contrastive.methods.RepresentationDistillation`):
  no labels; the student is then scored by the linear-evaluation protocol (``probe:``).

The student is the ``student:`` node (``conf/student/``), taking the teacher's channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch import nn

from contrastive.backbones import feature_dim, in_channels
from contrastive.checkpoints import (
    PROBE_HEAD_FILE,
    Pretrained,
    load_pretrained,
    load_teacher,
    save_backbone,
    save_probe_head,
)
from contrastive.errors import ConfigError
from contrastive.jobs import checks
from contrastive.jobs.run import Run, build_trainer
from contrastive.methods import LinearEvaluation, LogitDistillation
from contrastive.methods.distillation import distillation_metrics
from contrastive.methods.linear_probe import evaluate_outputs

SHOWN = (
    "distill/student_top1",
    "distill/ce_only_top1",
    "distill/teacher_top1",
    "distill/agreement",
    "distill/student_probe_top1",
    "distill/teacher_probe_top1",
)


def build_student(node: DictConfig, channels: int) -> nn.Module:
    """The ``student:`` backbone, taking the teacher's ``channels`` unless it sets its own."""
    wanted = node.get("in_channels")
    student = instantiate(node, _convert_="all", in_channels=channels if wanted is None else wanted)
    if in_channels(student) != channels:
        raise ConfigError(
            f"student.in_channels={in_channels(student)} but the teacher's images have "
            f"{channels} channels"
        )
    return student


def built(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, a refused hyperparameter turned into a user error."""
    try:
        return factory(*args, **kwargs)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def save_student(run: Run, student: nn.Module, teacher: Pretrained, **extra: Any) -> None:
    recipe = teacher.preprocessing()
    directory = run.output_dir / "student"
    directory.mkdir(parents=True, exist_ok=True)
    save_backbone(
        student.cpu(),
        str(directory / "backbone.pt"),
        recipe=asdict(recipe),
        **run.provenance(teacher.provenance).as_dict(),
        **extra,
    )


def distill(cfg: DictConfig) -> dict[str, Any]:
    """Run one distillation job and return its metrics (also in ``metrics.json``)."""
    with Run(cfg) as run:
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        factory = instantiate(cfg.distill, _convert_="all")
        labelled = issubclass(get_class(cfg.distill._target_), LogitDistillation)
        trust = bool(cfg.trust_checkpoint)
        if labelled or (Path(cfg.teacher) / PROBE_HEAD_FILE).is_file():
            teacher = load_teacher(cfg.teacher, trust=trust)
        else:  # SEED from a pretraining run (no head, so no teacher accuracy to show)
            teacher = load_pretrained(cfg.teacher, trust=trust)
        checks.check_classes(datamodule)
        checks.check_data(datamodule, teacher)
        if labelled:
            checks.check_head(teacher, datamodule)
        logger = run.logger(teacher.provenance)
        num_classes = int(datamodule.num_classes)
        dataset = str(datamodule.dataset)
        recipe = teacher.preprocessing()
        channels = recipe.channels
        metrics: dict[str, Any] = {}
        trainer: pl.Trainer | None = None
        if labelled:
            assert teacher.head is not None
            network = nn.Sequential(teacher.backbone, teacher.head.module)
            runs: list[tuple[str, dict[str, float]]] = [("student", {})]
            if cfg.baseline:
                runs.append(("ce_only", {"alpha": 0.0}))
            for name, alpha in runs:
                pl.seed_everything(cfg.seed, workers=True)  # same weights and batch order
                student = build_student(cfg.student, channels)
                model = built(factory, student, network, recipe, num_classes, name=name, **alpha)
                train_loader, test_loader = datamodule.labelled_loaders(datamodule.batch_size)
                trainer = build_trainer(cfg.trainer, [], logger=logger)
                started = run.seconds()
                trainer.fit(model, train_dataloaders=train_loader)
                seconds = run.seconds() - started
                trainer.test(model, dataloaders=test_loader, verbose=False)
                student_logits, teacher_logits, labels = (
                    torch.cat([batch[i] for batch in model.test_outputs]) for i in range(3)
                )
                prefix = f"distill/{name}_"
                metrics.update(distillation_metrics(student_logits, teacher_logits, labels, prefix))
                metrics[f"distill/{name}_train_seconds"] = seconds
                if name != "student":
                    continue
                top1 = evaluate_outputs(teacher_logits, labels, "softmax")["probe/test_top1"]
                metrics["distill/teacher_top1"] = float(top1)
                if trainer.is_global_zero:
                    save_student(run, student, teacher, dataset=dataset)
                    save_probe_head(
                        model.head.cpu(),
                        run.output_dir / "student" / PROBE_HEAD_FILE,
                        objective="softmax",
                        classes=list(datamodule.classes or ()),
                        dataset=dataset,
                    )
            # The headline keys, without the run prefix.
            for key in ("agreement", "test_kl"):
                metrics[f"distill/{key}"] = metrics[f"distill/student_{key}"]
            if "distill/ce_only_top1" in metrics:
                metrics["distill/gain_over_ce_only"] = (
                    metrics["distill/student_top1"] - metrics["distill/ce_only_top1"]
                )
            metrics["distill/teacher_params"] = sum(p.numel() for p in network.parameters())
            metrics["distill/student_params"] = sum(
                p.numel() for p in model.student.parameters()
            ) + sum(p.numel() for p in model.head.parameters())
        else:
            pl.seed_everything(cfg.seed, workers=True)
            student = build_student(cfg.student, channels)
            dim = feature_dim(teacher.backbone)
            model = built(factory, student, teacher.backbone, recipe, dim)
            train_loader, _ = datamodule.labelled_loaders(datamodule.batch_size)
            trainer = build_trainer(cfg.trainer, [], logger=logger)
            started = run.seconds()
            trainer.fit(model, train_dataloaders=train_loader)
            metrics["distill/seed_train_seconds"] = run.seconds() - started
            student = model.student.eval()
            probe: LinearEvaluation = instantiate(cfg.probe, _convert_="all")
            probe_trainer = build_trainer(cfg.trainer, [], max_epochs=probe.epochs, logger=logger)
            fitted, outputs, labels = probe.fit(
                student, recipe, datamodule, num_classes, probe_trainer
            )
            results = evaluate_outputs(outputs, labels, fitted.objective)
            metrics["distill/student_probe_top1"] = float(results["probe/test_top1"])
            if "probe/test_top1" in teacher.teacher_metrics:
                teacher_top1 = float(teacher.teacher_metrics["probe/test_top1"])
                metrics["distill/teacher_probe_top1"] = teacher_top1
            metrics["distill/teacher_params"] = sum(
                p.numel() for p in teacher.backbone.parameters()
            )
            metrics["distill/student_params"] = sum(p.numel() for p in student.parameters())
            if trainer.is_global_zero:
                save_student(run, student, teacher, dataset=dataset, metrics=metrics)
        assert trainer is not None
        return run.finish(metrics, "Distillation", SHOWN, trainer.is_global_zero)
