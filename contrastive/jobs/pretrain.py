"""The pretraining job, top to bottom: seed -> build -> check -> fit -> score -> write.

``scripts/pretrain.py`` and the ``contrastive-pretrain`` console script call
:func:`pretrain` with the composed Hydra config (``conf/pretrain.yaml``); the method is
the ``method:`` node (``conf/method/``), built with every part it names.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from contrastive.atomic import AtomicCheckpointIO
from contrastive.callbacks import KNNMonitor, OnlineLinearProbe, ViewThroughput
from contrastive.checkpoints import read_checkpoint, resume_checkpoint, save_backbone
from contrastive.errors import ConfigError
from contrastive.jobs import checks
from contrastive.jobs.run import Run, build_logger, build_trainer, scalars
from contrastive.transforms import ViewRecipe

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig, labelled: bool) -> list[pl.Callback]:
    """The configured callbacks; scorers are dropped for unlabelled data, and the best-model
    checkpoint falls back to "last only" when nothing computes its ``val/knn_top1``."""
    nodes = {name: node for name, node in (cfg.get("callbacks") or {}).items() if node}
    if not labelled:
        nodes = {n: c for n, c in nodes.items() if n not in ("knn", "online_probe")}
    callbacks = []
    for node in nodes.values():
        overrides: dict[str, Any] = {}
        if node.get("monitor") == "val/knn_top1" and "knn" not in nodes:
            overrides = {"monitor": None, "save_top_k": 0}
        callbacks.append(instantiate(node, _convert_="all", **overrides))
    return callbacks


def keep_global_batch(datamodule: Any, saved: dict[str, Any], world_size: int) -> None:
    """A resume keeps the global batch of the run it continues: on another number of
    processes the per-process batch is rescaled so that processes x batch is unchanged,
    and with it the global sample order (the sampler's epoch permutation is cut into
    global batches of that size whatever the number of ranks; see
    :class:`contrastive.data.sampler.ResumableSampler`). ``saved``: the checkpoint's
    ``contrastive`` entry (``world_size``, ``batch_size``; absent in older files)."""
    if "world_size" not in saved or "batch_size" not in saved:
        return
    old_world, old_batch = int(saved["world_size"]), int(saved["batch_size"])
    global_batch = old_world * old_batch
    if (old_world, old_batch) == (world_size, datamodule.batch_size):
        return
    if global_batch % world_size:
        raise ConfigError(
            f"the checkpoint was written by {old_world} process(es) with data.batch_size="
            f"{old_batch} (a global batch of {global_batch}), which {world_size} process(es) "
            f"cannot share evenly; resume on a number of processes that divides "
            f"{global_batch}, or start afresh in another run directory (resume=null)"
        )
    if datamodule.batch_size * world_size != global_batch:
        log.info(
            "resuming on %d process(es) a run checkpointed on %d: data.batch_size %d -> %d "
            "per process, keeping its global batch of %d and its sample order",
            world_size,
            old_world,
            datamodule.batch_size,
            global_batch // world_size,
            global_batch,
        )
    datamodule.batch_size = global_batch // world_size


def build(
    cfg: DictConfig,
    run: Run | None = None,
    resume_run_id: str | None = None,
    resumed: dict[str, Any] | None = None,
) -> tuple[Any, pl.LightningModule, list[pl.Callback], pl.Trainer]:
    """The datamodule, method, callbacks and trainer of ``cfg``, checked before any work
    (``resume_run_id``: the W&B run a resumed job continues; ``run`` owns the logger;
    ``resumed``: the ``contrastive`` entry of the checkpoint it resumes from)."""
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()  # a missing dataset fails here, before anything is built
    method = instantiate(cfg.method, _convert_="all")
    datamodule.use_views(method.recipe)
    checks.check_channels(
        datamodule.sample_shape()[0], method.backbone, method.recipe, datamodule.dataset
    )
    checks.check_image_size(method.backbone, method.recipe)
    checks.check_classes(datamodule)
    checks.check_optim(
        instantiate(cfg.optim.optimizer, _convert_="all"),
        instantiate(cfg.optim.scheduler, _convert_="all") if cfg.optim.get("scheduler") else None,
    )
    overrides: dict[str, Any] = {"plugins": [AtomicCheckpointIO()]}  # never half a file
    on_cpu = cfg.trainer.accelerator == "cpu" or (
        cfg.trainer.accelerator == "auto" and not torch.cuda.is_available()
    )
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        log.warning("SyncBatchNorm needs GPUs; on CPU each process keeps its own BN statistics")
        overrides["sync_batchnorm"] = False
    callbacks = build_callbacks(cfg, labelled=datamodule.labelled)
    logger = run.logger(resume_run_id=resume_run_id) if run else build_logger(cfg)
    trainer = build_trainer(cfg.trainer, callbacks, logger=logger, **overrides)
    if resumed is not None:
        keep_global_batch(datamodule, resumed, trainer.world_size)
    checks.check_batches(datamodule, trainer.world_size)
    checks.check_labels(method, datamodule)
    method.check_setup(datamodule.batch_size * trainer.world_size)
    return datamodule, method, callbacks, trainer


def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Run one pretraining job and return its final metrics (also in ``metrics.json``)."""
    with Run(cfg) as run:
        trust = bool(cfg.trust_checkpoint)
        checkpoint = resume_checkpoint(cfg.resume, run.output_dir)
        resumed = None
        if checkpoint is not None:  # refuses, with a message, a pickle that needs code
            # resume_checkpoint has CRC-checked the file already: no second full read.
            resumed = read_checkpoint(checkpoint, trust, check=False).get("contrastive", {})
        run_id = None if resumed is None else resumed.get("wandb_run_id")
        datamodule, method, callbacks, trainer = build(cfg, run, run_id, resumed)
        ckpt_path = None if checkpoint is None else str(checkpoint)
        trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=not trust)

        metrics: dict[str, Any] = scalars(trainer.callback_metrics)
        scorers = [c for c in callbacks if isinstance(c, KNNMonitor | OnlineLinearProbe)]
        final_epoch = trainer.current_epoch - 1
        if datamodule.labelled and any(s.last_epoch != final_epoch for s in scorers):
            # The last epoch was not validated: score the final weights (validate()
            # replaces callback_metrics, so merge rather than re-read).
            trainer.validate(method, datamodule=datamodule, verbose=False)
            metrics.update(scalars(trainer.callback_metrics))
        for callback in callbacks:
            if isinstance(callback, KNNMonitor):
                metrics["val/knn_num_test_samples"] = callback.num_test_samples
            if isinstance(callback, ViewThroughput) and callback.views_per_sec is not None:
                metrics["train/views_per_sec"] = callback.views_per_sec
        metrics["train/epochs"] = trainer.current_epoch
        if trainer.is_global_zero:
            path = run.output_dir / "backbone.pt"
            backbone: nn.Module = method.exported_backbone()  # type: ignore[operator]
            recipe: ViewRecipe = method.recipe  # type: ignore[assignment]
            save_backbone(
                backbone,
                str(path),
                recipe=asdict(recipe),
                dataset=str(datamodule.dataset),
                num_classes=datamodule.num_classes,
                metrics=metrics,
                **run.provenance().as_dict(),
            )
            run.log_artifact(path, metrics, cfg.get("log_artifacts", "auto"))
        shown = ("val/knn_top1", "val/online_top1")
        return run.finish(metrics, "Results", shown, trainer.is_global_zero)
