"""The pretraining job, top to bottom: seed -> build -> check -> fit -> evaluate -> write.

``scripts/pretrain.py`` and the ``contrastive-pretrain`` console script call
:func:`pretrain` with the composed Hydra config.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from contrastive import distributed
from contrastive.atomic import AtomicCheckpointIO
from contrastive.backbones import in_channels, save_backbone
from contrastive.callbacks import KNNMonitor, OnlineLinearProbe, ViewThroughput
from contrastive.checkpoints import checkpoint_problem, read_checkpoint, trusts_checkpoints
from contrastive.errors import ConfigError, Preempted
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


def wandb_offline(cfg: DictConfig) -> bool:
    """Whether the configured W&B logger runs offline (``logger.offline`` or
    ``WANDB_MODE=offline``)."""
    mode = os.environ.get("WANDB_MODE", "")
    return bool(cfg.logger.get("offline", False)) or mode in ("offline", "dryrun", "disabled")


def start_wandb(cfg: DictConfig, overrides: dict[str, Any]) -> pl.loggers.WandbLogger:
    """The W&B logger, started now; an online start that fails (no network, W&B down, a
    bad key) falls back to an offline run with a warning: W&B never fails a job."""
    logger = instantiate(cfg.logger, _convert_="all", **overrides)
    if wandb_offline(cfg):
        return logger
    try:
        logger.experiment  # noqa: B018 - wandb.init runs here, on rank zero
    except Exception as error:
        log.warning(
            "W&B could not start online (%s: %s); logging offline under %s instead, "
            "upload it later with `wandb sync`",
            type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "",
            cfg.logger.get("save_dir"),
        )
        import wandb

        wandb.teardown()  # drop what the failed start left behind
        os.environ["WANDB_MODE"] = "offline"  # this process only: it outranks offline=True
        offline = {k: v for k, v in overrides.items() if k not in ("id", "resume")}
        logger = instantiate(cfg.logger, _convert_="all", **offline, offline=True)
    return logger


def build_logger(
    cfg: DictConfig, source: dict[str, Any] | None = None, resume_run_id: str | None = None
) -> pl.loggers.Logger | bool:
    """The job's logger, with the composed config, the git commit and (for evaluation jobs,
    from ``source``, the metadata of the backbone they load) the pretraining config as
    hyperparameters. A W&B run joins the W&B group of the pretraining run it evaluates
    unless ``group`` is set, so one experiment's runs sit together on the dashboard. A
    resumed pretraining job passes the W&B run id its checkpoint recorded: online, the run
    continues on the same dashboard run; offline (W&B cannot resume offline runs) it
    starts a new offline run, with a warning naming both."""
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    overrides: dict[str, Any] = {}
    logger: pl.loggers.Logger
    if str(cfg.logger._target_).endswith("WandbLogger"):
        group = cfg.get("group") or (source or {}).get("wandb_group")
        if group:
            overrides["group"] = group
        if resume_run_id and wandb_offline(cfg):
            log.warning(
                "W&B is offline and cannot resume offline run %s: this job logs to a new "
                "offline run; `wandb sync` both",
                resume_run_id,
            )
        elif resume_run_id:
            overrides.update(id=resume_run_id, resume="allow")
        logger = start_wandb(cfg, overrides)
    else:
        logger = instantiate(cfg.logger, _convert_="all")
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
    group = cfg.get("group") or (cfg.logger.get("group") if cfg.get("logger") else None)
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
    """The checkpoint to resume from: ``resume=auto`` takes the newest whole checkpoint in
    the run directory (``checkpoints/last.ckpt``, Lightning's SLURM ``hpc_ckpt_*.ckpt``,
    then the best ``checkpoints/epoch*.ckpt``; a requeued SLURM or submitit job reruns in
    the same directory), skipping truncated or corrupt ones with a warning;
    ``resume=<path>`` takes that file; ``resume=null`` starts fresh. A run directory that
    holds checkpoints but no whole one is an error, never a silent fresh start."""
    resume = cfg.get("resume")
    if resume is None:
        return None
    if resume == "auto":
        output_dir = Path(cfg.output_dir)
        found = [
            output_dir / "checkpoints" / "last.ckpt",
            *output_dir.glob("hpc_ckpt_*.ckpt"),
            *(output_dir / "checkpoints").glob("epoch*.ckpt"),
        ]
        existing = sorted((p for p in found if p.is_file()), key=lambda p: -p.stat().st_mtime)
        problems: dict[str, str] = {}
        for candidate in existing:
            problem = checkpoint_problem(candidate)
            if problem is None:
                log.info("resuming from %s", candidate)
                return str(candidate)
            log.warning("skipping checkpoint %s: %s", candidate, problem)
            problems[candidate.name] = problem
        if problems:
            raise ConfigError(
                f"resume=auto: no usable checkpoint in {output_dir}: "
                + "; ".join(f"{name}: {problem}" for name, problem in problems.items())
                + ". Pass resume=<a good .ckpt>, or resume=null to start afresh."
            )
        return None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume={resume!r}: no such checkpoint file (or use resume=auto)")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ConfigError(f"resume={resume!r}: {problem}; pass a whole .ckpt or resume=auto")
    return str(path)


def check_channels(data_channels: int, backbone: Any, recipe: Any, dataset: str) -> None:
    """Refuse, before any work, a backbone or recipe that cannot take the data's images."""
    wanted = in_channels(backbone)
    if recipe.channels != wanted:
        raise ConfigError(
            f"augment.channels={recipe.channels} but backbone.in_channels={wanted}; "
            "they must match (leave backbone.in_channels at ${augment.channels})"
        )
    if data_channels == 3 and wanted == 1:
        raise ConfigError(
            f"data '{dataset}' has 3-channel (RGB) images but the backbone takes "
            "1-channel (grayscale) images. Use an RGB recipe, e.g. augment=cifar "
            "(backbone.in_channels follows augment.channels)."
        )


def build(
    cfg: DictConfig, resume_run_id: str | None = None
) -> tuple[Any, SimCLR, list[pl.Callback], pl.Trainer]:
    """Instantiate the datamodule, model, callbacks and trainer, checking them first
    (``resume_run_id``: the W&B run a resumed job continues, see :func:`build_logger`)."""
    datamodule = instantiate(cfg.data, _convert_="all")
    recipe = instantiate(cfg.augment, _convert_="all")
    datamodule.use_views(recipe)
    datamodule.prepare_data()  # a missing dataset fails here, before anything is built
    backbone = instantiate(cfg.backbone, _convert_="all")
    check_channels(datamodule.sample_shape()[0], backbone, recipe, datamodule.dataset)
    check_image_size(backbone, recipe, cfg)
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
    trainer_overrides["plugins"] = [AtomicCheckpointIO()]  # a crash never leaves half a file
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=build_logger(cfg, resume_run_id=resume_run_id),
        **trainer_overrides,
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


def check_image_size(backbone: nn.Module, recipe: Any, cfg: DictConfig) -> None:
    """Refuse, before any work, views too small for the backbone: one dummy forward pass,
    watching every strided convolution and pooling for an input smaller than its stride
    (the feature map has already run out)."""
    size, channels = int(recipe.image_size), int(recipe.channels)
    problems: list[str] = []

    def watch(name: str, stride: int) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            height, width = inputs[0].shape[-2:]
            if min(height, width) < stride and not problems:
                problems.append(f"its {name} (stride {stride}) would get a {height}x{width} map")

        return hook

    handles = []
    for name, module in backbone.named_modules():
        stride = getattr(module, "stride", 1)
        stride = max(stride) if isinstance(stride, tuple | list) else int(stride or 1)
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d) and stride > 1:
            handles.append(module.register_forward_pre_hook(watch(name, stride)))
    was_training = backbone.training
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, channels, size, size))
    except RuntimeError as error:
        problems.append(str(error).splitlines()[0][:160])
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    if problems:
        spec = getattr(backbone, "backbone_spec", {}) or {}
        raise ConfigError(
            f"augment.image_size={size} is too small for backbone {spec.get('name', '?')}: "
            f"{problems[0]}. Use larger views (augment.image_size) or a backbone that "
            "downsamples less (backbone.small_stem=true for ResNets, fewer backbone.widths "
            "for small_cnn)"
        )


def check_classes(datamodule: Any, cfg: DictConfig) -> None:
    """``data.num_classes`` must match the class folders (filled in from them if null)."""
    if not datamodule.labelled:
        return
    classes = datamodule.classes
    if datamodule.num_classes is None and classes:
        datamodule.num_classes = len(classes)
    elif classes and len(classes) != datamodule.num_classes:
        raise ConfigError(
            f"data.num_classes={datamodule.num_classes} but '{datamodule.dataset}' has "
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
    """At least one full training batch per process (the last partial one is dropped), and
    at least two images in a global batch (InfoNCE needs a negative)."""
    if datamodule.batch_size * trainer.world_size < 2:
        raise ConfigError(
            f"data.batch_size={datamodule.batch_size} x {trainer.world_size} process(es) is a "
            "global batch of one image: InfoNCE needs at least 2 (each image's negatives are "
            "the other images); raise data.batch_size"
        )
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
    checkpoint = resume_path(cfg)
    trust = trusts_checkpoints(cfg)
    run_id = None
    if checkpoint is not None:  # refuses, with a message, a pickle that needs code
        # resume_path has CRC-checked the file already: no second full read here.
        payload = read_checkpoint(Path(checkpoint), trust, check=False)
        run_id = payload.get("contrastive", {}).get("wandb_run_id")
    datamodule, model, callbacks, trainer = build(cfg, resume_run_id=run_id)

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=not trust)
    except Preempted:
        # Stopped on a signal with last.ckpt written: close the W&B run (marked preempted,
        # so the rerun can continue it) and the process group, then exit 128 + signal.
        for logger in trainer.loggers if trainer.is_global_zero else []:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.experiment.mark_preempting()
                logger.experiment.finish(exit_code=1)
        distributed.shutdown()
        raise
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
            dataset=str(datamodule.dataset),
            num_classes=datamodule.num_classes,
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
