"""Training a module in-process without a logger, and the small pieces the method tests
train: a tiny backbone and a 28 x 28 grey recipe."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from contrastive.backbones import build_backbone
from contrastive.transforms import ViewRecipe

RECIPE = ViewRecipe(image_size=28, channels=1, mean=(0.5,), std=(0.5,))


def fit_quietly(
    model: pl.LightningModule, inputs: Tensor, targets: Tensor, epochs: int, batch_size: int = 64
) -> None:
    """Fit ``model`` on shuffled ``(inputs, targets)`` batches, no logger, checkpoint or bar."""
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader)


def tiny_cnn(width: int = 8) -> nn.Module:
    return build_backbone("small_cnn", in_channels=1, widths=[width], pool_size=2)
