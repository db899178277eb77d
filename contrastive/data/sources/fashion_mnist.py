"""Fashion-MNIST (Xiao et al., 2017) from its IDX files: 28 x 28 grayscale, 10 classes."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Final

import numpy as np
import torch

from contrastive.data import checksums
from contrastive.data.errors import DatasetFormatError
from contrastive.data.sources.base import (
    ImageArrays,
    Source,
    Splits,
    StrPath,
    _resolve_root,
    _unique,
    find_or_download,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIRS",
    "FashionMNIST",
    "load_fashion_mnist",
]

FASHION_MNIST_CLASSES: Final[tuple[str, ...]] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Where system packages install Fashion-MNIST; searched after ``root``. Debian and Ubuntu's
#: ``dataset-fashion-mnist`` package puts the four gzipped IDX files here.
FASHION_MNIST_SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]

_IDX_IMAGES_MAGIC: Final = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC: Final = 2049  # 0x00000801: unsigned bytes, 1 dimension
_GZIP_MAGIC: Final = b"\x1f\x8b"
_APT_REMEDY: Final = "install it on Debian/Ubuntu with `sudo apt-get install dataset-fashion-mnist`"
_FASHION_MNIST_REMEDY: Final = (
    "Reinstall it (`sudo apt-get install --reinstall dataset-fashion-mnist`) or delete it and "
    "download again with data.source.download=true"
)


def _idx_candidates(prefix: str, kind: str, ndim: int) -> list[str]:
    stem = f"{prefix}-{kind}-idx{ndim}-ubyte"
    dotted = f"{prefix}-{kind}.idx{ndim}-ubyte"
    return [stem, f"{stem}.gz", dotted, f"{dotted}.gz"]


def _find_file(directory: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        path = directory / name
        if path.is_file():
            return path
    return None


def _read_idx(path: Path, magic: int, verify: bool = False) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (optionally gzipped) into an array of its dims;
    with ``verify``, an official file's content must have its known digest."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetFormatError(path, f"it could not be read or decompressed ({err})") from err
    if verify:
        checksums.verify(path, raw, _FASHION_MNIST_REMEDY)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetFormatError(
            path, f"it has {len(raw)} bytes, fewer than the {header_size}-byte IDX header"
        )
    found_magic = int.from_bytes(raw[:4], "big")
    if found_magic != magic:
        raise DatasetFormatError(path, f"its IDX magic number is {found_magic}, expected {magic}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "too long"
        raise DatasetFormatError(
            path,
            f"it is {problem}: the header promises {' x '.join(map(str, dims))} = {expected} "
            f"bytes of data, but {found} follow",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _load_idx_pair(images_path: Path, labels_path: Path, verify: bool = False) -> ImageArrays:
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC, verify)
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, verify).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetFormatError(
            [images_path, labels_path],
            f"{len(images)} images but {len(labels)} labels",
            hint="The two files do not belong together; replace them with a matching pair.",
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise DatasetFormatError(
            labels_path,
            f"it contains label {labels.max()}, but Fashion-MNIST labels are 0 to "
            f"{len(FASHION_MNIST_CLASSES) - 1}",
        )
    return ImageArrays(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels),
        classes=FASHION_MNIST_CLASSES,
    )


def load_fashion_mnist(
    root: StrPath | None, train: bool, download: bool = False, verify: bool = False
) -> ImageArrays:
    """Load Fashion-MNIST (Xiao et al., 2017): 28 x 28 grayscale, 10 classes.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; gzipped with a ``.gz`` suffix or
    not) are looked for, in order, in ``root``, in ``root/FashionMNIST/raw`` (torchvision's
    layout) and in each directory of :data:`FASHION_MNIST_SYSTEM_DIRS` (where Debian's
    ``dataset-fashion-mnist`` package installs them). Only then, and only if ``download``,
    torchvision downloads them into ``root/FashionMNIST/raw``.

    Args:
        root: Directory to look in and download into; ``None`` looks only in the system
            directories.
        train: The 60,000-image training split if true, else the 10,000-image test split.
        download: Download with torchvision if the files are found nowhere.
        verify: Check each file's content against the official digest
            (:mod:`contrastive.data.checksums`) before using it.

    Returns:
        Images of shape ``(N, 1, 28, 28)`` with labels 0 to 9.

    Raises:
        DatasetNotFoundError: The files were found nowhere and could not be downloaded.
        DatasetFormatError: A file is truncated, corrupt or not an IDX file of bytes.
    """
    root_path = _resolve_root(root)
    prefix = "train" if train else "t10k"
    images_names = _idx_candidates(prefix, "images", 3)
    labels_names = _idx_candidates(prefix, "labels", 1)
    local = [] if root_path is None else [root_path, root_path / "FashionMNIST" / "raw"]
    searched = _unique([*local, *(Path(d) for d in FASHION_MNIST_SYSTEM_DIRS)])

    def find() -> ImageArrays | None:
        for directory in searched:
            images_path = _find_file(directory, images_names)
            labels_path = _find_file(directory, labels_names)
            if images_path is not None and labels_path is not None:
                return _load_idx_pair(images_path, labels_path, verify)
        return None

    def fetch(directory: str) -> object:
        from torchvision import datasets

        return datasets.FashionMNIST(directory, train=train, download=True)

    return find_or_download(
        f"the Fashion-MNIST {'training' if train else 'test'} split "
        f"({images_names[0]}[.gz] and {labels_names[0]}[.gz])",
        searched,
        find,
        root=root_path,
        download=download,
        fetch=fetch,
        size="about 30 MB",
        remedies=[_APT_REMEDY],
    )


class FashionMNIST(Source):
    """Fashion-MNIST: 60,000 training and 10,000 test images, 28 x 28 grayscale, in 10
    classes; pretrains and builds the kNN bank on ``train``, tests on ``test``.

    Args:
        root: Where to look first and download into (:func:`load_fashion_mnist`).
        download: Let torchvision download the files when they are found nowhere.
        verify: Check the official files' digests (:mod:`contrastive.data.checksums`)
            before using them.
    """

    name: ClassVar[str] = "fashion_mnist"
    splits: ClassVar[Splits] = Splits("train", "train", "test", valid=("train", "test"))
    num_classes = len(FASHION_MNIST_CLASSES)

    def __init__(self, root: str | None = "data", download: bool = False, verify: bool = True):
        self.root = root
        self.download = download
        self.verify = verify

    def _load(self, split: str) -> ImageArrays:
        return load_fashion_mnist(self.root, split == "train", self.download, self.verify)
