"""Offline dataset sources: read image datasets from disk, without a network.

One module per format: :mod:`.fashion_mnist` (IDX files), :mod:`.cifar` (CIFAR-10 and
CIFAR-100 pickles), :mod:`.stl10` (raw binaries), :mod:`.image_folder` (folders of image
files, decoded lazily) and :mod:`.synthetic` (a small learnable set for tests); what they
share is in :mod:`.base`.

Each format has a reader (:func:`load_fashion_mnist`, :func:`load_cifar`,
:func:`load_stl10`, :func:`make_synthetic`, :class:`ImageFolderDataset`) and a
:class:`Source`, the configured dataset a DataModule takes: its own options only, its
``name``, its declared :class:`Splits` and ``load(split)``. :data:`SOURCES` is the one
registry of them, by name.

The in-memory readers return an :class:`ImageArrays`: a ``uint8`` tensor of images
``(N, C, H, W)``, an ``int64`` tensor of labels ``(N,)`` (``-1`` marks an unlabelled sample)
and the class names. Nothing is downloaded unless the caller passes ``download=True``; a
dataset that cannot be found raises :class:`~contrastive.data.errors.DatasetNotFoundError`,
whose message says where it was looked for and how to get it, and a damaged file raises
:class:`~contrastive.data.errors.DatasetFormatError` naming the file.

The on-disk formats are the ones torchvision writes (and the official archives contain), so
a ``data.source.root`` shared with torchvision works unchanged, but the files are parsed
here rather than through ``torchvision.datasets``: torchvision checks the md5 sums of the
official files and refuses anything else (a subset, a re-packed copy, a small test
fixture). torchvision is only used to download.

This package deliberately depends on neither Lightning nor Hydra.
"""

from __future__ import annotations

from typing import Final

from contrastive.data.sources.base import ImageArrays, Source, Splits, find_or_download
from contrastive.data.sources.cifar import CIFAR10, CIFAR10_CLASSES, CIFAR100, Cifar, load_cifar
from contrastive.data.sources.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SYSTEM_DIRS,
    FashionMNIST,
    load_fashion_mnist,
)
from contrastive.data.sources.image_folder import IMAGE_EXTENSIONS, ImageFolder, ImageFolderDataset
from contrastive.data.sources.stl10 import STL10, STL10_CLASSES, load_stl10
from contrastive.data.sources.synthetic import Synthetic, make_synthetic

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "CIFAR100",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIRS",
    "IMAGE_EXTENSIONS",
    "SOURCES",
    "SPLITS",
    "STL10",
    "STL10_CLASSES",
    "Cifar",
    "FashionMNIST",
    "ImageArrays",
    "ImageFolder",
    "ImageFolderDataset",
    "Source",
    "Splits",
    "Synthetic",
    "find_or_download",
    "load_cifar",
    "load_fashion_mnist",
    "load_stl10",
    "make_synthetic",
    "source_class",
]

#: Every source, by its name (``Source.name``): the one table of datasets and their splits.
SOURCES: Final[dict[str, type[Source]]] = {
    cls.name: cls for cls in (FashionMNIST, CIFAR10, CIFAR100, STL10, Synthetic, ImageFolder)
}

#: ``name -> (pretrain, bank, test)`` splits, read off :data:`SOURCES`.
SPLITS: Final[dict[str, tuple[str, str, str]]] = {
    name: (cls.splits.pretrain, cls.splits.bank, cls.splits.test) for name, cls in SOURCES.items()
}


def source_class(name: str) -> type[Source]:
    """The source registered as ``name``.

    Raises:
        ValueError: Unknown name.

    Examples:
        >>> source_class("cifar100").splits.valid
        ('train', 'test')
        >>> source_class("mnist")
        Traceback (most recent call last):
        ...
        ValueError: Unknown dataset 'mnist'; valid names are: fashion_mnist, cifar10, cifar100, stl10, synthetic, image_folder
    """
    if name not in SOURCES:
        raise ValueError(f"Unknown dataset {name!r}; valid names are: {', '.join(SOURCES)}")
    return SOURCES[name]
