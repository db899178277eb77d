"""What a method's checkpoint carries besides its weights (``checkpoint["contrastive"]``):
the backbone's spec and the view recipe (the evaluation jobs rebuild the backbone from the
file alone), every rank's view generator, the batch layout a resume on another number of
processes keeps, and the W&B run a resume continues."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytorch_lightning as pl


def checkpoint_entry(method: Any) -> dict[str, Any]:
    """The entry of ``method`` (every rank calls this: the view states are gathered)."""
    saved: dict[str, Any] = {
        "spec": getattr(method.backbone, "backbone_spec", None),
        "recipe": dataclasses.asdict(method.recipe),
    }
    states = method.view_stream.state_dict()
    if any(s is not None for s in states):
        saved["view_generators"] = states
    trainer = method.trainer if method._trainer is not None else None
    datamodule = getattr(trainer, "datamodule", None)
    if trainer is not None and datamodule is not None and hasattr(datamodule, "batch_size"):
        saved["world_size"] = trainer.world_size
        saved["batch_size"] = int(datamodule.batch_size)
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, pl.loggers.WandbLogger) and logger.version:
            saved["wandb_run_id"] = logger.version
    return saved


def restore(method: Any, checkpoint: dict[str, Any]) -> None:
    """Continue ``method``'s view stream from ``checkpoint``."""
    world = method.trainer.world_size if method._trainer is not None else 1
    method.view_stream.load(
        checkpoint.get("contrastive", {}),
        world,
        method.global_rank,
        int(checkpoint.get("global_step", 0)),
    )
