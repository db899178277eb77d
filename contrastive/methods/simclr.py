"""SimCLR (Chen et al., 2020): views -> backbone -> projection head -> InfoNCE."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from contrastive import distributed
from contrastive.backbones import feature_dim
from contrastive.errors import ConfigError
from contrastive.losses import InfoNCELoss
from contrastive.metrics import similarity_stats
from contrastive.optim import param_groups, scale_learning_rate
from contrastive.transforms import BatchedViews, ViewRecipe, eval_images

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class SimCLR(pl.LightningModule):
    """SimCLR pretraining, wired by composition.

    Args:
        backbone: images ``(B, C, H, W)`` -> features ``(B, F)``; has ``feature_dim``.
        projection_head: builds the head from the feature width (a Hydra partial).
        loss: the contrastive objective on ``(V, B, D)`` embeddings.
        augment: the view recipe. With ``backend="batched"`` views are made here, on the
            batch's device; with ``"per_sample"`` the datamodule already made them.
        optimizer: builds the optimiser from parameter groups (a Hydra partial). Its
            ``weight_decay`` applies to weights only, never to biases or norms.
        scheduler: builds a per-step LR scheduler from ``(optimizer, total_steps,
            steps_per_epoch)`` (a Hydra partial), or ``None``.
        channels_last: run the backbone in channels-last memory format.
        compile: ``torch.compile`` the backbone and the projection head in place
            (``nn.Module.compile``: parameter names, checkpoints and ``backbone.pt`` are
            unchanged); the first steps pay the compilation (about 20-40 s on the CPU).
        compile_mode: ``torch.compile``'s ``mode``: ``default``, ``reduce-overhead``,
            ``max-autotune`` or ``max-autotune-no-cudagraphs``.
        lr_scaling: ``none``, ``linear`` or ``sqrt``: scale the built optimiser's rates
            (then the rates at a global batch of 256) with the global batch, per-process
            batch x processes x accumulation (:func:`contrastive.optim.scale_learning_rate`),
            before the schedule starts from them.
        augment_seed: seed of the view generator; each process adds its global rank, so
            ranks draw different augmentations.
    """

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: Callable[[int], nn.Module],
        loss: InfoNCELoss,
        augment: ViewRecipe,
        optimizer: Callable[[Any], Optimizer],
        scheduler: Callable[..., LRScheduler] | None = None,
        channels_last: bool = False,
        lr_scaling: str = "none",
        augment_seed: int = 0,
        compile: bool = False,
        compile_mode: str = "default",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim(backbone)
        self.projection_head = projection_head(self.feature_dim)
        self.loss = loss
        self.recipe = augment
        self.views = BatchedViews(augment)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        if lr_scaling not in ("none", "linear", "sqrt"):
            raise ValueError(f"method.lr_scaling must be none, linear or sqrt, got {lr_scaling!r}")
        self.lr_scaling = lr_scaling
        self.augment_seed = augment_seed
        self._view_generator: torch.Generator | None = None
        self._view_state: Tensor | None = None  # from a mid-epoch checkpoint
        self._resume_offset = 0  # a fresh stream after a resume on another world size
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"method.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                f"got {compile_mode!r}"
            )
        if compile:
            mode = None if compile_mode == "default" else compile_mode
            self.backbone.compile(mode=mode)
            self.projection_head.compile(mode=mode)

    # --- data on the device -------------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            if images.ndim == 4:  # uint8 (B, C, H, W): make the views here
                return self.views(images, self.view_generator(images.device)), labels
            return images.transpose(0, 1), labels  # per-sample views (B, V, ...) -> (V, B, ...)
        return self.prepare_eval_images(images), labels

    def view_generator(self, device: torch.device) -> torch.Generator:
        """This process's augmentation RNG, seeded ``augment_seed + global_rank`` and
        re-seeded at each epoch start with the epoch added, so a resumed run does not
        replay the first epoch's views. A run resumed mid-epoch continues from the state
        its checkpoint saved."""
        if self._view_generator is None or self._view_generator.device != device:
            self._view_generator = torch.Generator(device=device)
            self._view_generator.manual_seed(self._epoch_seed())
            if self._view_state is not None:
                self._view_generator.set_state(self._view_state)
                self._view_state = None
        return self._view_generator

    def _epoch_seed(self) -> int:
        epoch = self.current_epoch if self._trainer is not None else 0
        return self.augment_seed + self.global_rank + 1_000_003 * epoch + self._resume_offset

    def on_train_epoch_start(self) -> None:
        self._view_state = None  # (not called when resuming mid-epoch) a new epoch's seed
        self._resume_offset = 0
        if self._view_generator is not None:
            self._view_generator.manual_seed(self._epoch_seed())

    def prepare_eval_images(self, images: Tensor) -> Tensor:
        """Unaugmented images as the backbone sees them: scaled, resized, normalised."""
        return eval_images(images, self.recipe)

    # --- steps ----------------------------------------------------------------------------
    def embed(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        views, labels = batch
        num_views, batch_size = views.shape[:2]
        features = self.embed(views.flatten(0, 1))  # (V*B, F)
        embeddings = self.projection_head(features).view(num_views, batch_size, -1)  # (V, B, D)
        if num_views == 2:
            loss = self.loss(embeddings[0], embeddings[1])
        else:
            loss = self.loss.forward_views(embeddings)
        stats = similarity_stats(embeddings[0].detach(), embeddings[1].detach())
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size
        )
        self.log("train/pos_sim", stats["pos_sim"], on_step=True, on_epoch=False)
        self.log("train/neg_sim", stats["neg_sim"], on_step=True, on_epoch=False)
        self.log("train/temperature", self.loss.temperature, on_step=True, on_epoch=False)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)  # type: ignore[union-attr]
        return {
            "loss": loss,
            "features": features.view(num_views, batch_size, -1)[0].detach(),  # (B, F)
            "embeddings": embeddings.detach(),  # (V, B, D), for the health and media callbacks
            "labels": labels,
            "num_views": num_views * batch_size,
        }

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        images, labels = batch
        return {"features": self.embed(images), "labels": labels}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What the evaluation jobs need to rebuild the backbone from this file alone.
        checkpoint["contrastive"] = {
            "spec": getattr(self.backbone, "backbone_spec", None),
            "recipe": dataclasses.asdict(self.recipe),
        }
        # Where each rank's views had got to this epoch (every rank calls this hook, rank
        # zero writes the file), and the batch layout a resume on another world keeps.
        state = None if self._view_generator is None else self._view_generator.get_state()
        states = distributed.all_gather_object(state)
        if any(s is not None for s in states):
            checkpoint["contrastive"]["view_generators"] = states
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "batch_size"):
            checkpoint["contrastive"]["world_size"] = self.trainer.world_size
            checkpoint["contrastive"]["batch_size"] = int(datamodule.batch_size)
        for logger in self.trainer.loggers if self._trainer is not None else []:
            if isinstance(logger, pl.loggers.WandbLogger) and logger.version:
                checkpoint["contrastive"]["wandb_run_id"] = logger.version  # a resume continues it

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._view_generator = None
        saved = checkpoint.get("contrastive", {})
        states = saved.get("view_generators")
        if states is None and "view_generator" in saved:  # written before per-rank states
            states = [saved["view_generator"]]
        world = self.trainer.world_size if self._trainer is not None else 1
        if states is None or len(states) == world:
            self._view_state = None if states is None else states[self.global_rank]
        else:
            # Another number of processes: the saved streams do not map onto these ranks.
            # Each rank starts a stream of its own from the seed, the epoch and the step.
            self._view_state = None
            self._resume_offset = 7_919 * int(checkpoint.get("global_step", 0))
            log.info(
                "views after this resume are drawn afresh: the checkpoint holds %d rank(s)' "
                "view generators, this run has %d",
                len(states),
                world,
            )

    # --- optimisation -----------------------------------------------------------------------
    def _training_batches(self) -> int:
        """Training batches per epoch and process, from the datamodule's arithmetic rather
        than by building the loader: Lightning calls ``configure_optimizers`` before it
        restores a checkpoint, and a loader built then would start a resumed epoch from
        its beginning."""
        trainer = self.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_batches"):
            trainer.estimated_stepping_batches  # noqa: B018 - sets the loader up
            return int(trainer.num_training_batches)
        return int(datamodule.train_batches(trainer.world_size, trainer.limit_train_batches))

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(
            param_groups(nn.ModuleList([self.backbone, self.projection_head]))
        )
        if self.lr_scaling != "none":
            datamodule = getattr(self.trainer, "datamodule", None)
            batch_size = int(getattr(datamodule, "batch_size", 256))
            global_batch = batch_size * self.trainer.world_size
            global_batch *= self.trainer.accumulate_grad_batches
            for group in optimizer.param_groups:
                group["lr"] = scale_learning_rate(group["lr"], global_batch, self.lr_scaling)
        if self.scheduler_factory is None:
            return optimizer
        batches = self._training_batches()
        steps_per_epoch = math.ceil(batches / self.trainer.accumulate_grad_batches)
        max_epochs, max_steps = self.trainer.max_epochs, self.trainer.max_steps
        total_steps = (
            float("inf") if max_epochs in (None, -1) else steps_per_epoch * max(max_epochs, 1)
        )
        if max_steps != -1:
            total_steps = min(total_steps, max_steps)
        if not math.isfinite(total_steps):
            raise ConfigError(
                "the learning-rate schedule needs a finite length: set trainer.max_epochs or "
                "trainer.max_steps (or optim.scheduler=null)"
            )
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(total_steps), steps_per_epoch=max(1, steps_per_epoch)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
