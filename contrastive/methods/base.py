"""What every pretraining method shares, and nothing more: views made on the device,
the backbone and projection head, logging, checkpoint hooks and the optimiser set-up.

A method is a subclass that says how a batch of views becomes a loss
(:meth:`ContrastiveMethod.contrastive_step`) and wires its own parts (a predictor, a
momentum encoder, a queue) by composition; see ``simclr.py``, ``moco_v2.py``, ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from contrastive.backbones import feature_dim
from contrastive.losses import InfoNCELoss
from contrastive.methods import optimization, state
from contrastive.methods.views import ViewStream
from contrastive.metrics import similarity_stats
from contrastive.transforms import BatchedViews, ViewRecipe, eval_images

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class Step:
    """A step's loss, the first view's features ``(B, F)`` (online probe), the online
    embeddings ``(V, B, D)`` (health and media callbacks), and more to log each step."""

    loss: Tensor
    features: Tensor
    embeddings: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)


class ContrastiveMethod(pl.LightningModule):
    """The shared wiring of a pretraining method.

    Args:
        backbone: images ``(B, C, H, W)`` -> features ``(B, F)``; has ``feature_dim``.
        projection_head: builds the head from the feature width (a Hydra partial).
        loss: the contrastive objective (temperature, fixed or learnt: then the optimiser
            trains it too; cross-rank gather; DCL options).
        augment: the view recipe. With ``backend="batched"`` views are made here, on the
            batch's device; with ``"per_sample"`` the datamodule already made them.
        optimizer: builds the optimiser from parameter groups (a Hydra partial). Its
            ``weight_decay`` applies to weights only, never to biases or norms.
        scheduler: builds a per-step LR scheduler from ``(optimizer, total_steps,
            steps_per_epoch)`` (a Hydra partial), or ``None``.
        channels_last: run the backbone in channels-last memory format.
        lr_scaling: ``none``, ``linear`` or ``sqrt``: scale the rates (then the rates at a
            global batch of 256) with the global batch (:mod:`.optimization`).
        augment_seed: seed of the view generator; each process adds its global rank.
        compile: ``torch.compile`` the trained modules in place (``nn.Module.compile``:
            parameter names and checkpoints are unchanged) when the trainer sets up.
        compile_mode: ``torch.compile``'s ``mode``, one of :data:`COMPILE_MODES`.
    """

    requires_labels: ClassVar[bool] = False

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
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"method.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                f"got {compile_mode!r}"
            )
        self.backbone = backbone
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.feature_dim = feature_dim(backbone)
        self.projection_head = projection_head(self.feature_dim)
        self.loss = loss
        self.recipe = augment
        self.views = BatchedViews(augment)
        self.view_stream = ViewStream(augment_seed)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.channels_last = channels_last
        self.lr_scaling = optimization.check_lr_scaling(lr_scaling)
        self.compile_mode = compile_mode if compile else None

    # --- what a method adds ---------------------------------------------------------------
    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        """The loss of global views ``(V, B, C, H, W)`` and local views ``(L, B, C, h, w)``
        (multi-crop; ``None`` without) of images labelled ``labels`` ``(B,)``."""
        raise NotImplementedError

    def trainable(self) -> nn.Module:
        """The modules ``compile`` compiles and the optimiser trains (with the loss's)."""
        return nn.ModuleList([self.backbone, self.projection_head])

    def exported_backbone(self) -> nn.Module:  # what backbone.pt holds
        return self.backbone

    def check_setup(self, global_batch: int) -> None:
        """Refuse, before any work, a global batch this method cannot train (ConfigError);
        a method with ``requires_labels`` is refused unlabelled data by the job."""

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if self.trainer is not None and self.trainer.training:
            if images.ndim == 4:  # uint8 (B, C, H, W): make the views here
                generator = self.view_generator(images.device)
                views = self.views(images, generator)
                if not self.recipe.local_views:
                    return views, labels
                return views, labels, self.views.local_views(images, generator)
            return images.transpose(0, 1), labels  # per-sample views (B, V, ...) -> (V, B, ...)
        return self.prepare_eval_images(images), labels

    def view_generator(self, device: torch.device) -> torch.Generator:
        """This process's augmentation RNG (:class:`contrastive.methods.views.ViewStream`)."""
        epoch = self.current_epoch if self._trainer is not None else 0
        return self.view_stream.generator(device, epoch, self.global_rank)

    def on_train_epoch_start(self) -> None:  # (not called on a mid-epoch resume)
        self.view_stream.start_epoch(self.current_epoch, self.global_rank)

    def prepare_eval_images(self, images: Tensor) -> Tensor:
        """Unaugmented images as the backbone sees them: scaled, resized, normalised."""
        return eval_images(images, self.recipe)

    def embed(self, images: Tensor) -> Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def project(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(V, B, F)`` and embeddings ``(V, B, D)``: one pass over all views."""
        num_views, batch_size = views.shape[:2]
        features = self.embed(views.flatten(0, 1))  # (V B, F)
        embeddings = self.projection_head(features)  # (V B, D)
        return features.view(num_views, batch_size, -1), embeddings.view(num_views, batch_size, -1)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Any]:
        views, labels, *local = batch  # (V, B, C, H, W), (B,)[, (L, B, C, h, w)]
        num_views, batch_size = views.shape[:2]
        step = self.contrastive_step(views, labels, local[0] if local else None)
        num_views += local[0].shape[0] if local else 0
        stats = similarity_stats(step.embeddings[0].detach(), step.embeddings[1].detach())
        every_step: dict[str, Any] = {"on_step": True, "on_epoch": False}
        self.log("train/loss", step.loss, prog_bar=True, batch_size=batch_size, **every_step)
        self.log("train/pos_sim", stats["pos_sim"], **every_step)
        self.log("train/neg_sim", stats["neg_sim"], **every_step)
        self.log("train/temperature", self.loss.temperature, **every_step)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], **every_step)  # type: ignore[union-attr]
        for name, value in step.logs.items():
            self.log(name, value, **every_step)
        return {
            "loss": step.loss,
            "features": step.features.detach(),  # (B, F)
            "embeddings": step.embeddings.detach(),  # (V, B, D)
            "labels": labels,
            "num_views": num_views * batch_size,
        }

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor]:
        images, labels = batch
        return {"features": self.embed(images), "labels": labels}

    def configure_model(self) -> None:
        if self.compile_mode is not None and not getattr(self, "_compiled", False):
            mode = None if self.compile_mode == "default" else self.compile_mode
            for module in self.trainable().children():
                module.compile(mode=mode)
            self._compiled = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["contrastive"] = state.checkpoint_entry(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state.restore(self, checkpoint)

    def configure_optimizers(self) -> Any:
        trained = optimization.with_loss(self.trainable(), self.loss)
        factories = self.optimizer_factory, self.scheduler_factory
        return optimization.configure(self.trainer, trained, *factories, self.lr_scaling)
