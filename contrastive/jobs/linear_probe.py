"""The linear-probe job: (cached) frozen features -> linear head -> test.

``scripts/linear_probe.py`` and ``contrastive-linear-probe`` call :func:`linear_probe`
(``conf/linear_probe.yaml``; the protocol is the ``probe:`` node, ``conf/probe/``). The run
directory gets the head (``probe_head.pt``) and the backbone it was trained on, so it is
a distillation teacher.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from contrastive.backbones import build_backbone
from contrastive.checkpoints import (
    PROBE_HEAD_FILE,
    Pretrained,
    load_pretrained,
    save_backbone,
    save_probe_head,
)
from contrastive.errors import ConfigError
from contrastive.jobs import checks
from contrastive.jobs.run import Run, build_trainer
from contrastive.methods import LinearEvaluation
from contrastive.methods.linear_probe import evaluate_outputs
from contrastive.plots import save_confusion_png
from contrastive.transforms import ViewRecipe


def pixel_backbone(datamodule: Any) -> Pretrained:
    """``pretrained=pixels``: the raw-pixel baseline, images scaled to [0, 1] and flattened
    (the probe head's affine-free BatchNorm standardises each pixel)."""
    channels, height, width = datamodule.sample_shape()
    if height != width:
        raise ConfigError(f"pretrained=pixels needs square images, got {height}x{width}")
    backbone = build_backbone("pixels", in_channels=channels, image_size=height)
    recipe = ViewRecipe(
        image_size=height, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels
    )
    return Pretrained(backbone, recipe, backbone.backbone_spec, "pixels")  # type: ignore[arg-type]


def linear_probe(cfg: DictConfig) -> dict[str, Any]:
    """Train and test a linear head on a pretrained backbone; return the metrics."""
    with Run(cfg) as run:
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        if cfg.pretrained == "pixels":
            pretrained = pixel_backbone(datamodule)
        else:
            pretrained = load_pretrained(cfg.pretrained, trust=bool(cfg.trust_checkpoint))
        checks.check_classes(datamodule)
        checks.check_data(datamodule, pretrained)
        recipe = pretrained.preprocessing()
        probe: LinearEvaluation = instantiate(cfg.probe, _convert_="all")
        trainer = build_trainer(cfg.trainer, [], logger=run.logger(pretrained.provenance))
        num_outputs = int(datamodule.num_classes)
        model, outputs, labels = probe.fit(
            pretrained.backbone, recipe, datamodule, num_outputs, trainer
        )

        results = evaluate_outputs(outputs, labels, model.objective)
        metrics: dict[str, Any] = {k: float(v) for k, v in results.items() if v.numel() == 1}
        classes = datamodule.classes or tuple(str(i) for i in range(num_outputs))
        if "probe/confusion" in results:
            confusion = results["probe/confusion"]
            per_class = confusion.diagonal().float() / confusion.sum(dim=1).clamp(min=1)
            for name, accuracy in zip(classes, per_class.tolist(), strict=False):
                metrics[f"probe/test_class_top1/{name}"] = accuracy
            png = run.output_dir / "confusion_matrix.png"
            save_confusion_png(confusion, classes, png)
            for logger in trainer.loggers:
                if isinstance(logger, pl.loggers.WandbLogger):
                    logger.log_image("probe/confusion_matrix", [str(png)])
        metrics["probe/test_samples"] = int(labels.numel())
        if trainer.is_global_zero:
            # The run directory is self-contained: the backbone the head was trained on
            # (the fine-tuned one with probe.finetune=true) and the head, for distill.
            save_backbone(
                pretrained.backbone.cpu(),
                str(run.output_dir / "backbone.pt"),
                recipe=asdict(recipe),
                dataset=str(datamodule.dataset),
                num_classes=num_outputs,
                source=pretrained.path,
                finetuned=probe.finetune,
                **run.provenance(pretrained.provenance).as_dict(),
            )
            save_probe_head(
                model.head.cpu(),
                run.output_dir / PROBE_HEAD_FILE,
                objective=model.objective,
                classes=list(classes),
                dataset=str(datamodule.dataset),
                metrics={k: v for k, v in metrics.items() if "class_top1" not in k},
            )
        shown = ("probe/test_top1", "probe/test_top5")
        return run.finish(
            metrics, f"Linear probe ({pretrained.path})", shown, trainer.is_global_zero
        )
