"""Offline dataset sources: read image datasets from disk into memory, without a network.

Every loader returns an :class:`ImageArrays`: a ``uint8`` tensor of images ``(N, C, H, W)``,
an ``int64`` tensor of labels ``(N,)`` (``-1`` marks an unlabelled sample) and the class
names. Nothing is downloaded unless the caller passes ``download=True``; a dataset that
cannot be found raises :class:`~contrastive.data.errors.DatasetNotFoundError`, whose message
says where it was looked for and how to get it, and a damaged file raises
:class:`~contrastive.data.errors.DatasetFormatError` naming the file.

The on-disk formats are the ones torchvision writes (and the official archives contain), so a
``data.root`` shared with torchvision works unchanged, but the files are parsed here rather
than through ``torchvision.datasets``: torchvision checks the md5 sums of the official files
and refuses anything else (a subset, a re-packed copy, a small test fixture). torchvision is
only used to download.

For folders of image files, :class:`ImageFolderDataset` decodes lazily, one image per
``__getitem__``. :func:`make_synthetic` makes a small learnable dataset for tests, and
:func:`load_arrays` dispatches on a dataset name, for use by a DataModule. One module per
format (:mod:`.fashion_mnist`, :mod:`.cifar`, :mod:`.stl10`, :mod:`.image_folder`,
:mod:`.synthetic`); what they share is in :mod:`.base`.

This package deliberately depends on neither Lightning nor Hydra.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, get_args

from contrastive.data.sources.base import ImageArrays, StrPath, find_or_download
from contrastive.data.sources.cifar import CIFAR10_CLASSES, load_cifar
from contrastive.data.sources.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SYSTEM_DIRS,
    load_fashion_mnist,
)
from contrastive.data.sources.image_folder import IMAGE_EXTENSIONS, ImageFolderDataset
from contrastive.data.sources.stl10 import STL10_CLASSES, Stl10Split, load_stl10
from contrastive.data.sources.synthetic import make_synthetic

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "DATASET_SPLITS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIRS",
    "IMAGE_EXTENSIONS",
    "STL10_CLASSES",
    "DatasetName",
    "ImageArrays",
    "ImageFolderDataset",
    "find_or_download",
    "load_arrays",
    "load_cifar",
    "load_fashion_mnist",
    "load_stl10",
    "make_synthetic",
]

DatasetName: TypeAlias = Literal["fashion_mnist", "cifar10", "cifar100", "stl10", "synthetic"]

DATASET_NAMES: Final[tuple[str, ...]] = get_args(DatasetName)
DATASET_SPLITS: Final[dict[str, tuple[str, ...]]] = {
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": get_args(Stl10Split),
    "synthetic": ("train", "val", "test"),
}


def load_arrays(
    name: DatasetName,
    root: StrPath | None,
    split: str,
    download: bool = False,
    **kw: Any,
) -> ImageArrays:
    """Load the named dataset's split into memory, dispatching to its loader.

    Args:
        name: One of :data:`DATASET_NAMES`.
        root: The dataset directory (``data.root``); unused by ``"synthetic"``.
        split: One of ``DATASET_SPLITS[name]``.
        download: Let the loader download a missing dataset with torchvision.
        **kw: Extra arguments of the loader (``verify`` for Fashion-MNIST and CIFAR: check
            the official files' digests; ignored by the others); for ``"synthetic"``, those of
            :func:`make_synthetic` (``num_samples``, ``num_classes``, ``image_size``,
            ``channels`` and optionally ``seed``).

    Raises:
        ValueError: Unknown dataset name or split.

    Examples:
        >>> load_arrays("mnist", None, "train")
        Traceback (most recent call last):
        ...
        ValueError: Unknown dataset 'mnist'; valid names are: fashion_mnist, cifar10, cifar100, stl10, synthetic
    """
    if name not in DATASET_SPLITS:
        raise ValueError(f"Unknown dataset {name!r}; valid names are: {', '.join(DATASET_NAMES)}")
    if split not in DATASET_SPLITS[name]:
        raise ValueError(
            f"Unknown split {split!r} for {name}; valid splits are: "
            f"{', '.join(DATASET_SPLITS[name])}"
        )
    if name not in ("fashion_mnist", "cifar10", "cifar100"):
        kw.pop("verify", None)  # only the official files of these have known digests
    if name == "fashion_mnist":
        return load_fashion_mnist(root, train=split == "train", download=download, **kw)
    if name in ("cifar10", "cifar100"):
        return load_cifar(root, name, train=split == "train", download=download, **kw)
    if name == "stl10":
        return load_stl10(root, split, download=download, **kw)  # type: ignore[arg-type]
    return make_synthetic(split=split, **kw)
