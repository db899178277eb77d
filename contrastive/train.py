"""The pretraining job, top to bottom: seed -> build -> check -> fit -> evaluate -> write.

``scripts/pretrain.py`` and the ``contrastive-pretrain`` console script call
:func:`pretrain` with the composed Hydra config.
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
from omegaconf import DictConfig, OmegaConf

from contrastive.backbones import in_channels, save_backbone
from contrastive.callbacks import KNNMonitor, ViewThroughput
from contrastive.errors import ConfigError
from contrastive.methods import SimCLR

log = logging.getLogger(__name__)


def scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def build_logger(cfg: DictConfig) -> pl.loggers.Logger | bool:
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    logger = instantiate(cfg.logger, _convert_="all")
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``resume=auto`` takes the run directory's
    ``checkpoints/last.ckpt`` when there is one (a requeued SLURM or submitit job reruns in
    the same directory); ``resume=<path>`` takes that file; ``resume=null`` starts fresh."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    if resume == "auto":
        last = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        return None
    if not Path(resume).is_file():
        raise ConfigError(f"resume={resume!r}: no such checkpoint file (or use resume=auto)")
    return str(resume)


def check_channels(data_channels: int, backbone: Any, recipe: Any, cfg: DictConfig) -> None:
    """Refuse, before any work, a backbone or recipe that cannot take the data's images."""
    wanted = in_channels(backbone)
    if recipe.channels != wanted:
        raise ConfigError(
            f"augment.channels={recipe.channels} but backbone.in_channels={wanted}; "
            "they must match (leave backbone.in_channels at ${augment.channels})"
        )
    if data_channels == 3 and wanted == 1:
        raise ConfigError(
            f"data '{cfg.data.dataset}' has 3-channel (RGB) images but the backbone takes "
            "1-channel (grayscale) images. Use an RGB recipe, e.g. augment=cifar "
            "(backbone.in_channels follows augment.channels)."
        )


def build(cfg: DictConfig) -> tuple[Any, SimCLR, list[pl.Callback], pl.Trainer]:
    """Instantiate the datamodule, model, callbacks and trainer, checking them first."""
    datamodule = instantiate(cfg.data, _convert_="all")
    recipe = instantiate(cfg.augment, _convert_="all")
    datamodule.use_views(recipe)
    datamodule.prepare_data()  # a missing dataset fails here, before anything is built
    backbone = instantiate(cfg.backbone, _convert_="all")
    check_channels(datamodule.sample_shape()[0], backbone, recipe, cfg)
    # A partial, then called: instantiate() would turn the recipe dataclass into a config.
    model: SimCLR = instantiate(cfg.model, _partial_=True, _convert_="all")(
        backbone=backbone,
        loss=instantiate(cfg.loss, _convert_="all"),
        augment=recipe,
        optimizer=instantiate(cfg.optim.optimizer, _convert_="all"),
        lr_scaling=cfg.optim.get("lr_scaling", "none"),
        augment_seed=int(cfg.seed),
        scheduler=instantiate(cfg.optim.scheduler, _convert_="all")
        if cfg.optim.get("scheduler")
        else None,
    )
    trainer_overrides: dict[str, Any] = {}
    on_cpu = cfg.trainer.accelerator == "cpu" or (
        cfg.trainer.accelerator == "auto" and not torch.cuda.is_available()
    )
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        log.warning("SyncBatchNorm needs GPUs; on CPU each process keeps its own BN statistics")
        trainer_overrides["sync_batchnorm"] = False
    callbacks = [
        instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c
    ]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_logger(cfg), **trainer_overrides
    )
    return datamodule, model, callbacks, trainer


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Run one pretraining job and return its final metrics (also in ``metrics.json``)."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, callbacks, trainer = build(cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))
    metrics: dict[str, Any] = scalars(trainer.callback_metrics)
    knn = next((c for c in callbacks if isinstance(c, KNNMonitor)), None)
    if knn is not None and datamodule.labelled and knn.last_epoch != trainer.current_epoch - 1:
        # The last epoch was not validated: score the final weights (validate() replaces
        # callback_metrics, so merge rather than re-read).
        trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update(scalars(trainer.callback_metrics))

    if knn is not None:
        metrics["val/knn_num_test_samples"] = knn.num_test_samples
    throughput = next((c for c in callbacks if isinstance(c, ViewThroughput)), None)
    if throughput is not None and throughput.views_per_sec is not None:
        metrics["train/views_per_sec"] = throughput.views_per_sec
    metrics["time/total_seconds"] = time.perf_counter() - started
    metrics["train/epochs"] = trainer.current_epoch
    if trainer.is_global_zero:
        save_backbone(
            model.backbone,
            str(output_dir / "backbone.pt"),
            recipe=asdict(model.recipe),
            dataset=str(cfg.data.dataset),
            num_classes=int(cfg.data.num_classes),
            metrics=metrics,
        )
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        summary = ", ".join(
            f"{k}={metrics[k]:.4f}" for k in ("val/knn_top1", "val/online_top1") if k in metrics
        )
        log.info("finished in %.0f s: %s", metrics["time/total_seconds"], summary)
        print(f"\nResults: {summary} ({metrics['time/total_seconds'] / 60:.1f} min)")
        print(f"Run directory: {output_dir.resolve()}")
    finish_loggers(trainer, metrics)
    return metrics


def finish_loggers(trainer: pl.Trainer, metrics: dict[str, Any]) -> None:
    """Put the final metrics in each W&B run's summary and close it, so the run file is
    complete when the job returns (not only at interpreter exit)."""
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.WandbLogger) and trainer.is_global_zero:
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()
