"""Offline dataset sources and the LightningDataModule over them."""

from contrastive.data.datamodule import ImageDataModule
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import SOURCES, SPLITS

__all__ = ["SOURCES", "SPLITS", "DatasetFormatError", "DatasetNotFoundError", "ImageDataModule"]
