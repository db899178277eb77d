"""Offline dataset sources and the LightningDataModule over them."""

from contrastive.data.datamodule import SPLITS, ImageDataModule
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["SPLITS", "DatasetFormatError", "DatasetNotFoundError", "ImageDataModule"]
