"""Pictures of a pretraining run, as PNGs in ``<run dir>/media/`` and as W&B images.

- ``views.png``: augmented view pairs of the first training batch (the recipe, seen);
- ``similarities_epoch<E>.png``: positive vs negative cosine similarities of a batch;
- ``embedding_map_epoch<E>.png``: a 2-D map of test-set features coloured by class (UMAP
  when ``umap-learn`` is installed, else PCA);
- ``curves.png`` (and ``history.jsonl``, the numbers behind it): loss and accuracy curves;
- a W&B table ``media/embeddings`` of test thumbnails, labels, 2-D coordinates and
  PCA-reduced features at the last epoch, for W&B's embedding projector.

The callback gathers the data and publishes the files; the figures themselves are drawn by
:mod:`contrastive.plots`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.atomic import atomic_write_text
from contrastive.callbacks.health import logging_step
from contrastive.plots import draw_curves, draw_embedding_map, draw_similarities

CURVE_KEYS = ("train/loss", "val/knn_top1", "val/online_top1")


def _own_rng() -> Any:
    """A context in which random draws (``torch.pca_lowrank`` samples) leave the training
    RNG streams untouched: drawing pictures must not change what the run learns."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


def project_2d(features: Tensor) -> tuple[Tensor, str]:
    """``(N, F)`` -> ``(N, 2)`` coordinates and the method's name: UMAP if installed, else
    PCA (the top two principal components)."""
    features = features.float()
    try:
        import umap

        coords = umap.UMAP(n_components=2, random_state=0).fit_transform(features.numpy())
        return torch.as_tensor(coords), "UMAP"
    except ImportError:
        pass
    return pca(features, 2), "PCA"


def pca(features: Tensor, dims: int) -> Tensor:
    """``(N, F)`` -> ``(N, min(dims, N, F))``: the centred features on their top principal
    components (``torch.pca_lowrank``, randomised: call it under :func:`_own_rng`)."""
    features = features.float()
    centred = features - features.mean(dim=0)
    _, _, basis = torch.pca_lowrank(centred, q=min(dims, *centred.shape), center=False)
    return centred @ basis


def denormalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Normalised ``(B, C, H, W)`` -> [0, 1] for display."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


class MediaLogger(pl.Callback):
    """Draws the pictures listed in the module docstring, on global rank zero.

    Args:
        every_n_epochs: the similarity histogram and embedding map are drawn at the first
            epoch, every ``every_n_epochs`` epochs, and at the last one (the map needs a
            validation epoch there).
        view_pairs: how many images the view grid shows (two views each).
        map_points: at most this many test images in the embedding map.
        table_rows: rows of the W&B embeddings table (kept small: thumbnails are files).
        table_dim: the table's features are PCA-reduced to this many dimensions.
    """

    def __init__(
        self,
        every_n_epochs: int = 3,
        view_pairs: int = 16,
        map_points: int = 2000,
        table_rows: int = 256,
        table_dim: int = 32,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"media every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.view_pairs = view_pairs
        self.map_points = map_points
        self.table_rows = table_rows
        self.table_dim = table_dim
        self.history: list[dict[str, float]] = []
        self._views_done = False
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._images: list[Tensor] = []

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def _dir(trainer: pl.Trainer) -> Path:
        directory = Path(trainer.default_root_dir) / "media"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @staticmethod
    def _last_epoch(trainer: pl.Trainer) -> bool:
        return trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - 1

    def _drawing_epoch(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch
        return epoch == 0 or (epoch + 1) % self.every_n_epochs == 0 or self._last_epoch(trainer)

    @staticmethod
    def _publish(trainer: pl.Trainer, key: str, path: Path, caption: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(key, [str(path)], step=trainer.global_step, caption=[caption])

    # --- the view grid -------------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not trainer.is_global_zero:
            return
        if logging_step(trainer):  # as often as the loggers get it, so no extra syncs
            self._record(trainer, {"train/loss": outputs["loss"]})
        if not self._views_done and batch[0].ndim == 5:  # (V, B, C, H, W) views
            self._views_done = True
            self._draw_views(trainer, pl_module, batch[0])
        if batch_idx == 0 and self._drawing_epoch(trainer) and "embeddings" in outputs:
            self._draw_similarities(trainer, outputs["embeddings"])

    def _draw_views(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, views: Tensor
    ) -> None:
        from torchvision.utils import save_image

        recipe = cast(Any, pl_module).recipe
        mean, std = recipe.channel_stats()
        pairs = views[:2, : self.view_pairs].float().cpu()  # (2, n, C, H, W)
        count = pairs.shape[1]
        # column i: view 0 above view 1 of image i
        grid = denormalize(pairs.flatten(0, 1), mean, std)
        path = self._dir(trainer) / "views.png"
        upscale = max(1, 64 // grid.shape[-1])
        grid = F.interpolate(grid, scale_factor=upscale, mode="nearest")
        save_image(grid, path, nrow=count, padding=2, pad_value=1.0)
        self._publish(trainer, "media/views", path, "augmented view pairs: view 1 over view 2")

    def _draw_similarities(self, trainer: pl.Trainer, embeddings: Tensor) -> None:
        z1 = F.normalize(embeddings[0].float(), dim=1).cpu()
        z2 = F.normalize(embeddings[1].float(), dim=1).cpu()
        similarity = z1 @ z2.T  # (B, B)
        positives = similarity.diagonal()
        negatives = similarity[~torch.eye(len(z1), dtype=torch.bool)]
        path = self._dir(trainer) / f"similarities_epoch{trainer.current_epoch:03d}.png"
        title = f"epoch {trainer.current_epoch}: positive vs negative pairs"
        draw_similarities(positives, negatives, title, path)
        self._publish(trainer, "media/similarities", path, f"epoch {trainer.current_epoch}")

    # --- the embedding map and table -----------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._features, self._labels, self._images = [], [], []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != 1 or not trainer.is_global_zero or trainer.sanity_checking:
            return
        have = sum(len(f) for f in self._features)
        if have >= self.map_points:
            return
        take = self.map_points - have
        self._features.append(outputs["features"][:take].float().cpu())
        self._labels.append(outputs["labels"][:take].cpu())
        if sum(len(i) for i in self._images) < self.table_rows:
            self._images.append(batch[0][: self.table_rows].float().cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        self._record(
            trainer,
            {
                k: trainer.callback_metrics[k]
                for k in CURVE_KEYS[1:]
                if k in trainer.callback_metrics
            },
        )
        if not self._features or not self._drawing_epoch(trainer):
            return
        features, labels = torch.cat(self._features), torch.cat(self._labels)
        with _own_rng():
            coords, method = project_2d(features)
            self._draw_map(trainer, coords, labels, method)
            if self._last_epoch(trainer):  # the projector wants the final embeddings
                self._log_table(trainer, pl_module, features, labels, coords)

    def _class_names(self, trainer: pl.Trainer, count: int) -> list[str]:
        classes = getattr(getattr(trainer, "datamodule", None), "classes", None)
        return list(classes) if classes else [str(i) for i in range(count)]

    def _draw_map(self, trainer: pl.Trainer, coords: Tensor, labels: Tensor, method: str) -> None:
        names = self._class_names(trainer, int(labels.max()) + 1)
        path = self._dir(trainer) / f"embedding_map_epoch{trainer.current_epoch:03d}.png"
        title = f"test features, {method}, epoch {trainer.current_epoch}"
        draw_embedding_map(coords, labels, names, title, path)
        self._publish(
            trainer, "media/embedding_map", path, f"{method}, epoch {trainer.current_epoch}"
        )

    def _log_table(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        features: Tensor,
        labels: Tensor,
        coords: Tensor,
    ) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, pl.loggers.WandbLogger)]
        if not loggers or not self._images:
            return
        import wandb

        rows = min(self.table_rows, len(features))
        recipe = cast(Any, pl_module).recipe
        mean, std = recipe.channel_stats()
        thumbnails = denormalize(torch.cat(self._images)[:rows], mean, std)
        reduced = pca(features[:rows], self.table_dim)
        names = self._class_names(trainer, int(labels.max()) + 1)
        data = []
        for i in range(rows):
            image = (thumbnails[i].permute(1, 2, 0).squeeze(-1).numpy() * 255).astype("uint8")
            label = int(labels[i])
            data.append(
                [
                    wandb.Image(image),
                    label,
                    names[label] if label < len(names) else str(label),
                    float(coords[i, 0]),
                    float(coords[i, 1]),
                    reduced[i].tolist(),
                ]
            )
        columns = ["image", "label", "class", "x", "y", "features"]
        for logger in loggers:
            logger.log_table(
                "media/embeddings", columns=columns, data=data, step=trainer.global_step
            )

    # --- curves --------------------------------------------------------------------------
    def _record(self, trainer: pl.Trainer, values: dict[str, Any]) -> None:
        row = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
        if row:
            self.history.append(
                {"step": trainer.global_step, "epoch": trainer.current_epoch, **row}
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        directory = self._dir(trainer)
        rows = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write_text(directory / "history.jsonl", rows)
        path = draw_curves({"this run": self.history}, directory / "curves.png")
        self._publish(trainer, "media/curves", path, "loss and accuracy")
