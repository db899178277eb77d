"""The pretraining job, top to bottom: seed -> build -> check -> fit -> evaluate -> write.

``scripts/pretrain.py`` and the ``contrastive-pretrain`` console script call
:func:`pretrain` with the composed Hydra config.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from contrastive import distributed
from contrastive.backbones import in_channels, save_backbone
from contrastive.callbacks import KNNMonitor, OnlineLinearProbe, ViewThroughput
from contrastive.errors import ConfigError
from contrastive.methods import SimCLR

log = logging.getLogger(__name__)


def scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``-dirty`` when it has local
    changes), or ``None`` outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def build_logger(cfg: DictConfig, source: dict[str, Any] | None = None) -> pl.loggers.Logger | bool:
    """The job's logger, with the composed config, the git commit and (for evaluation jobs,
    from ``source``, the metadata of the backbone they load) the pretraining config as
    hyperparameters. A W&B run joins the W&B group of the pretraining run it evaluates
    unless ``group`` is set, so one experiment's runs sit together on the dashboard."""
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    overrides: dict[str, Any] = {}
    if str(cfg.logger._target_).endswith("WandbLogger"):
        group = cfg.get("group") or (source or {}).get("wandb_group")
        if group:
            overrides["group"] = group
    logger = instantiate(cfg.logger, _convert_="all", **overrides)
    hyperparameters: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hyperparameters["git_commit"] = git_commit()
    if source is not None and source.get("config") is not None:
        hyperparameters["pretrain_config"] = source["config"]
    logger.log_hyperparams(hyperparameters)
    return logger


def provenance(cfg: DictConfig, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``backbone.pt`` records about where it came from: the W&B group, the pretraining
    config and the git commit (an evaluation job passes its source's through)."""
    if source is not None:
        return {k: source.get(k) for k in ("wandb_group", "config", "git_commit")}
    group = cfg.logger.get("group") if cfg.get("logger") else None
    return {
        "wandb_group": group,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "git_commit": git_commit(),
    }


def log_backbone_artifact(
    cfg: DictConfig, trainer: pl.Trainer, path: Path, metrics: dict[str, Any]
) -> None:
    """``log_artifacts``: ``auto`` logs ``backbone.pt`` as a W&B model artifact on online
    runs only; ``true`` also offline (stored with the run for ``wandb sync``); ``false``
    never."""
    setting = cfg.get("log_artifacts", "auto")
    for logger in trainer.loggers:
        if not isinstance(logger, pl.loggers.WandbLogger):
            continue
        run = logger.experiment
        if setting is False or (setting == "auto" and run.offline):
            continue
        import wandb

        artifact = wandb.Artifact(f"backbone-{run.id}", type="model", metadata=metrics)
        artifact.add_file(str(path))
        run.log_artifact(artifact)


def resume_path(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``resume=auto`` takes the run directory's
    ``checkpoints/last.ckpt`` when there is one (a requeued SLURM or submitit job reruns in
    the same directory); ``resume=<path>`` takes that file; ``resume=null`` starts fresh."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    if resume == "auto":
        output_dir = Path(cfg.output_dir)
        candidates = [output_dir / "checkpoints" / "last.ckpt", *output_dir.glob("hpc_ckpt_*.ckpt")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        newest = max(existing, key=lambda p: p.stat().st_mtime)
        log.info("resuming from %s", newest)
        # "hpc": Lightning's own SLURM requeue checkpoint, which Lightning then loads.
        return "hpc" if newest.name.startswith("hpc_ckpt_") else str(newest)
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
    check_classes(datamodule, cfg)
    optimizer = instantiate(cfg.optim.optimizer, _convert_="all")
    scheduler = (
        instantiate(cfg.optim.scheduler, _convert_="all") if cfg.optim.get("scheduler") else None
    )
    check_optim(optimizer, scheduler)
    try:
        # A partial, then called: instantiate() would turn the recipe dataclass into a config.
        model: SimCLR = instantiate(cfg.model, _partial_=True, _convert_="all")(
            backbone=backbone,
            loss=instantiate(cfg.loss, _convert_="all"),
            augment=recipe,
            optimizer=optimizer,
            lr_scaling=cfg.optim.get("lr_scaling", "none"),
            augment_seed=int(cfg.seed),
            scheduler=scheduler,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    trainer_overrides: dict[str, Any] = {}
    on_cpu = cfg.trainer.accelerator == "cpu" or (
        cfg.trainer.accelerator == "auto" and not torch.cuda.is_available()
    )
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        log.warning("SyncBatchNorm needs GPUs; on CPU each process keeps its own BN statistics")
        trainer_overrides["sync_batchnorm"] = False
    callbacks = build_callbacks(cfg, labelled=datamodule.labelled)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_logger(cfg), **trainer_overrides
    )
    check_batches(datamodule, trainer)
    return datamodule, model, callbacks, trainer


def build_callbacks(cfg: DictConfig, labelled: bool) -> list[pl.Callback]:
    """The configured callbacks; scorers are dropped for unlabelled data, and the best-model
    checkpoint falls back to "last only" when nothing computes its ``val/knn_top1``."""
    nodes = {name: node for name, node in (cfg.get("callbacks") or {}).items() if node}
    if not labelled:
        nodes = {n: c for n, c in nodes.items() if n not in ("knn", "online_probe")}
    callbacks = []
    for node in nodes.values():
        overrides: dict[str, Any] = {}
        monitor = node.get("monitor")
        if monitor == "val/knn_top1" and "knn" not in nodes:
            overrides = {"monitor": None, "save_top_k": 0}
        callbacks.append(instantiate(node, _convert_="all", **overrides))
    return callbacks


def check_classes(datamodule: Any, cfg: DictConfig) -> None:
    """``data.num_classes`` must match the class folders (filled in from them if null)."""
    if not datamodule.labelled:
        return
    classes = datamodule.classes
    if cfg.data.get("num_classes") is None and classes:
        with open_dict(cfg):
            cfg.data.num_classes = len(classes)
    elif classes and len(classes) != cfg.data.num_classes:
        raise ConfigError(
            f"data.num_classes={cfg.data.num_classes} but '{cfg.data.dataset}' has "
            f"{len(classes)} classes; set data.num_classes={len(classes)} (or null)"
        )


def check_optim(optimizer: Any, scheduler: Any) -> None:
    """Build the optimiser and schedule once on a dummy parameter, so a bad value (a
    negative lr, warmup, ...) stops the job before any work."""
    try:
        dummy = optimizer([torch.nn.Parameter(torch.zeros(1))])
        if scheduler is not None:
            scheduler(dummy, total_steps=10, steps_per_epoch=2)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optim: {error}") from None


def check_batches(datamodule: Any, trainer: pl.Trainer) -> None:
    """At least one full training batch per process (the last partial one is dropped)."""
    size = len(datamodule.train_dataloader().dataset)
    needed = datamodule.batch_size * trainer.world_size
    if size < needed:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} x {trainer.world_size} process(es) "
            f"needs at least {needed} training images, but '{datamodule.dataset}' has "
            f"{size}; lower data.batch_size"
        )


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Run one pretraining job and return its final metrics (also in ``metrics.json``)."""
    started = time.perf_counter()
    output_dir = Path(cfg.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, callbacks, trainer = build(cfg)

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg))
    metrics: dict[str, Any] = scalars(trainer.callback_metrics)
    knn = next((c for c in callbacks if isinstance(c, KNNMonitor)), None)
    scorers = [c for c in callbacks if isinstance(c, KNNMonitor | OnlineLinearProbe)]
    final_epoch = trainer.current_epoch - 1
    if datamodule.labelled and any(s.last_epoch != final_epoch for s in scorers):
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
            num_classes=cfg.data.get("num_classes"),
            metrics=metrics,
            **provenance(cfg),
        )
        log_backbone_artifact(cfg, trainer, output_dir / "backbone.pt", metrics)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        summary = ", ".join(
            f"{k}={metrics[k]:.4f}" for k in ("val/knn_top1", "val/online_top1") if k in metrics
        )
        log.info("finished in %.0f s: %s", metrics["time/total_seconds"], summary)
        print(f"\nResults: {summary} ({metrics['time/total_seconds'] / 60:.1f} min)")
        print(f"Run directory: {output_dir.resolve()}")
    finish_job(trainer.loggers, metrics, trainer.is_global_zero)
    return metrics


def finish_job(
    loggers: list[pl.loggers.Logger], metrics: dict[str, Any], is_global_zero: bool = True
) -> None:
    """End a job: put the final metrics in each W&B run's summary and close it (so the run
    file is complete when the job returns, not only at interpreter exit), then release the
    process group on every rank."""
    for logger in loggers:
        if not is_global_zero:
            continue
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()
        else:
            logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            logger.finalize("success")
    distributed.shutdown()
