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
:func:`load_arrays` dispatches on a dataset name, for use by a DataModule.

This module deliberately depends on neither Lightning nor Hydra.
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import io
import os
import pickle
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as tvf

from contrastive.data import checksums
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError

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
    "load_arrays",
    "load_cifar",
    "load_fashion_mnist",
    "load_stl10",
    "make_synthetic",
]

StrPath: TypeAlias = "str | os.PathLike[str]"
DatasetName: TypeAlias = Literal["fashion_mnist", "cifar10", "cifar100", "stl10", "synthetic"]
CifarVariant: TypeAlias = Literal["cifar10", "cifar100"]
Stl10Split: TypeAlias = Literal["train", "test", "unlabeled", "train+unlabeled"]
OnBadImage: TypeAlias = Literal["skip", "error"]

DATASET_NAMES: Final[tuple[str, ...]] = get_args(DatasetName)
DATASET_SPLITS: Final[dict[str, tuple[str, ...]]] = {
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": get_args(Stl10Split),
    "synthetic": ("train", "val", "test"),
}

_DOWNLOAD_REMEDY = (
    "set `data.download=true` (the `download=True` argument) to download it into "
    "`data.root` with torchvision"
)


@dataclass(frozen=True, eq=False)
class ImageArrays:
    """A whole dataset held in memory.

    Attributes:
        images: ``uint8`` images, shape ``(N, C, H, W)``.
        labels: ``int64`` class indices into ``classes``, shape ``(N,)``; ``-1`` for
            unlabelled samples.
        classes: The class names, indexed by label.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                "images must be a uint8 tensor of shape (N, C, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be an int64 tensor of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if self.labels.numel() and not (
            int(self.labels.min()) >= -1 and int(self.labels.max()) < len(self.classes)
        ):
            raise ValueError(
                f"labels must lie in [-1, {len(self.classes)}) for {len(self.classes)} classes, "
                f"got [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _resolve_root(root: StrPath | None) -> Path | None:
    return None if root is None else Path(root).expanduser().absolute()


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return list(seen)


def _torchvision_download(
    dataset: Callable[[], object],
    what: str,
    searched: Sequence[Path],
    remedies: Sequence[str],
) -> None:
    """Run a torchvision download, turning a failure into a :class:`DatasetNotFoundError`."""
    try:
        dataset()
    except (OSError, RuntimeError) as err:
        raise DatasetNotFoundError(
            what, searched, remedies, detail=f"Downloading it with torchvision failed: {err}"
        ) from err


# --------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)
# --------------------------------------------------------------------------------------

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


_FASHION_MNIST_REMEDY = (
    "Reinstall it (`sudo apt-get install --reinstall dataset-fashion-mnist`) or delete it and "
    "download again with data.download=true"
)


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

    what = (
        f"the Fashion-MNIST {'training' if train else 'test'} split "
        f"({images_names[0]}[.gz] and {labels_names[0]}[.gz])"
    )
    remedies = [
        "install it on Debian/Ubuntu with `sudo apt-get install dataset-fashion-mnist`",
        _DOWNLOAD_REMEDY,
    ]
    found = find()
    if found is not None:
        return found
    if not download or root_path is None:
        detail = None
        if download:
            detail = "It cannot be downloaded because no root directory (`data.root`) was given"
        raise DatasetNotFoundError(what, searched, remedies, detail=detail)

    def fetch() -> object:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST(str(root_path), train=train, download=True)

    _torchvision_download(fetch, what, searched, remedies[:1])
    found = find()
    if found is None:
        raise DatasetNotFoundError(
            what, searched, remedies[:1], detail="torchvision downloaded it, but not there"
        )
    return found


# --------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (pickled python batches)
# --------------------------------------------------------------------------------------

CIFAR10_CLASSES: Final[tuple[str, ...]] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class _CifarSpec:
    title: str
    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    labels_key: str
    names_key: str
    num_classes: int
    archive_mb: int


_CIFAR_SPECS: Final[dict[str, _CifarSpec]] = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        labels_key="labels",
        names_key="label_names",
        num_classes=10,
        archive_mb=163,
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        labels_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        archive_mb=161,
    ),
}


def _numpy_core(submodule: str, name: str) -> Callable[[], Any]:
    def resolve() -> Any:
        try:  # NumPy >= 2 moved numpy.core to numpy._core.
            module = importlib.import_module(f"numpy._core.{submodule}")
        except ImportError:  # pragma: no cover - NumPy 1.x
            module = importlib.import_module(f"numpy.core.{submodule}")
        return getattr(module, name)

    return resolve


# The only globals a CIFAR batch (a dict of lists, strings and one uint8 ndarray) needs,
# whether pickled by Python 2 (the official files) or by Python 3 with any protocol.
_PICKLE_GLOBALS: Final[dict[tuple[str, str], Callable[[], Any]]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,
    **{
        (f"numpy.{core}.{submodule}", name): _numpy_core(submodule, name)
        for core in ("core", "_core")
        for submodule, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))
    },
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and NumPy arrays only, so a dataset file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _PICKLE_GLOBALS.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which a dataset file has no reason to contain"
            )
        return resolve()


def _unpickle_dict(path: Path, verify: bool = False) -> dict[str, Any]:
    """Load a CIFAR pickle as torchvision does (``encoding="bytes"``), with string keys;
    with ``verify``, an official file must have its known MD5 first."""
    try:
        content = path.read_bytes()
        if verify:
            checksums.verify(
                path, content, "Delete the folder and download again with data.download=true"
            )
        loaded = _ArrayUnpickler(io.BytesIO(content), encoding="bytes").load()
    except DatasetFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise DatasetFormatError(path, f"it is not a readable pickle ({err})") from err
    if not isinstance(loaded, dict):
        raise DatasetFormatError(path, f"it holds a {type(loaded).__name__}, not a dict")
    return {
        (key.decode("latin-1") if isinstance(key, bytes) else str(key)): value
        for key, value in loaded.items()
    }


def _require(path: Path, batch: dict[str, Any], key: str) -> Any:
    if key not in batch:
        raise DatasetFormatError(path, f"it has no {key!r} entry (found {sorted(batch)})")
    return batch[key]


def _read_cifar_batch(
    path: Path, labels_key: str, num_classes: int, verify: bool = False
) -> tuple[Tensor, Tensor]:
    batch = _unpickle_dict(path, verify)
    data = np.asarray(_require(path, batch, "data"))
    labels = np.asarray(_require(path, batch, labels_key))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(
            path, f"its data is {data.dtype} of shape {data.shape}, expected uint8 (N, 3072)"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetFormatError(
            path, f"it has {labels.size} {labels.dtype} labels for {len(data)} images"
        )
    if labels.size and not (labels.min() >= 0 and labels.max() < num_classes):
        raise DatasetFormatError(
            path, f"its labels span {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )
    # Rows are the red, green then blue planes, each 32 x 32 row-major: already (C, H, W).
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def _read_class_names(path: Path, key: str) -> tuple[str, ...]:
    names = _require(path, _unpickle_dict(path), key)
    if not isinstance(names, list) or not names:
        raise DatasetFormatError(path, f"its {key!r} entry is not a list of names")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar(
    root: StrPath | None,
    variant: CifarVariant,
    train: bool,
    download: bool = False,
    verify: bool = False,
) -> ImageArrays:
    """Load CIFAR-10 or CIFAR-100 (Krizhevsky, 2009): 32 x 32 RGB, 10 or 100 classes.

    Reads the "python version" of the dataset as extracted by torchvision or by hand:
    ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
    ``root/cifar-100-python/{train, test, meta}`` (``root`` may also be that folder itself).
    Each file is a pickled dict with ``b"data"``, a ``uint8`` array ``(N, 3072)``, and
    ``b"labels"`` (CIFAR-100: ``b"fine_labels"``, the 100-class labels).

    The pickles are read here rather than by ``torchvision.datasets.CIFAR10``, which would
    reject any file whose md5 differs from the official one. Unpickling is restricted to
    plain data and NumPy arrays, so a tampered file raises instead of running code.

    Args:
        root: Directory containing the extracted folder, and to download into.
        variant: ``"cifar10"`` or ``"cifar100"``.
        train: The 50,000-image training split if true, else the 10,000-image test split.
        download: Download and extract with torchvision if the files are not found.

    Returns:
        Images of shape ``(N, 3, 32, 32)`` and their labels.

    Raises:
        DatasetNotFoundError: The files were not found and could not be downloaded.
        DatasetFormatError: A file is not a readable CIFAR pickle.
    """
    if variant not in _CIFAR_SPECS:
        raise ValueError(f"variant must be one of {sorted(_CIFAR_SPECS)}, got {variant!r}")
    spec = _CIFAR_SPECS[variant]
    root_path = _resolve_root(root)
    needed = (*(spec.train_files if train else spec.test_files), spec.meta_file)
    searched = [] if root_path is None else _unique([root_path / spec.folder, root_path])

    def find() -> Path | None:
        for directory in searched:
            if all((directory / name).is_file() for name in needed):
                return directory
        return None

    directory = find()
    if directory is None:
        what = (
            f"the {spec.title} {'training' if train else 'test'} split "
            f"({spec.folder}/ with {', '.join(needed)})"
        )
        remedies = [
            f"{_DOWNLOAD_REMEDY} (about {spec.archive_mb} MB)",
            f"download the python version, {spec.archive}, from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it in `data.root`, "
            f"so that `data.root`/{spec.folder}/ exists",
        ]
        detail = _cifar_detail(root_path, spec, needed)
        if not download or root_path is None:
            if download:
                detail = "It cannot be downloaded because no root was given"
            raise DatasetNotFoundError(what, searched, remedies, detail=detail)

        def fetch() -> object:
            from torchvision import datasets

            cls = datasets.CIFAR10 if variant == "cifar10" else datasets.CIFAR100
            return cls(str(root_path), train=train, download=True)

        _torchvision_download(fetch, what, searched, remedies[1:])
        directory = find()
        if directory is None:
            raise DatasetNotFoundError(what, searched, remedies[1:], detail=detail)

    parts = [
        _read_cifar_batch(directory / name, spec.labels_key, spec.num_classes, verify)
        for name in needed[:-1]
    ]
    classes = _read_class_names(directory / spec.meta_file, spec.names_key)
    labels = torch.cat([labels for _, labels in parts])
    if labels.numel() and int(labels.max()) >= len(classes):
        raise DatasetFormatError(
            directory / spec.meta_file,
            f"it names {len(classes)} classes, but the labels go up to {int(labels.max())}",
        )
    return ImageArrays(torch.cat([images for images, _ in parts]), labels, classes)


def _cifar_detail(root: Path | None, spec: _CifarSpec, needed: Sequence[str]) -> str | None:
    if root is None:
        return "No root directory (`data.root`) was given"
    folder = root / spec.folder
    if folder.is_dir():
        missing = [name for name in needed if not (folder / name).is_file()]
        return f"{folder} exists but lacks {', '.join(missing)}"
    if (root / spec.archive).is_file():
        return f"{root / spec.archive} exists but has not been extracted"
    return None


# --------------------------------------------------------------------------------------
# STL-10 (raw binary files)
# --------------------------------------------------------------------------------------

STL10_CLASSES: Final[tuple[str, ...]] = (
    "airplane",
    "bird",
    "car",
    "cat",
    "deer",
    "dog",
    "horse",
    "monkey",
    "ship",
    "truck",
)
_STL10_FOLDER: Final = "stl10_binary"
_STL10_SIZE: Final = 96
_STL10_IMAGE_BYTES: Final = 3 * _STL10_SIZE * _STL10_SIZE
_STL10_FILES: Final[dict[str, tuple[str, str | None]]] = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin", None),
}


def _stl10_count(path: Path) -> int:
    size = path.stat().st_size
    if size == 0 or size % _STL10_IMAGE_BYTES:
        raise DatasetFormatError(
            path,
            f"its size, {size} bytes, is not a positive multiple of one 3 x 96 x 96 image "
            f"({_STL10_IMAGE_BYTES} bytes)",
        )
    return size // _STL10_IMAGE_BYTES


def _read_stl10_labels(path: Path | None, count: int, num_classes: int) -> Tensor:
    if path is None:
        return torch.full((count,), -1, dtype=torch.int64)
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if labels.shape != (count,):
        raise DatasetFormatError(path, f"it has {labels.size} labels for {count} images")
    if labels.size and not (labels.min() >= 0 and labels.max() < num_classes):
        raise DatasetFormatError(
            path,
            f"its labels span {labels.min() + 1}..{labels.max() + 1}, expected 1..{num_classes}",
        )
    return torch.from_numpy(labels)


def load_stl10(root: StrPath | None, split: Stl10Split, download: bool = False) -> ImageArrays:
    """Load STL-10 (Coates et al., 2011): 96 x 96 RGB, 10 classes plus 100,000 unlabelled.

    Reads torchvision's layout, ``root/stl10_binary/`` (``root`` may also be that folder),
    holding ``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin``,
    ``unlabeled_X.bin`` and ``class_names.txt``. Each ``*_X.bin`` is raw ``uint8``, per image
    3 planes of 96 x 96 stored column-major (so each plane is transposed on reading, as
    torchvision does); each ``*_y.bin`` holds one byte per image, the labels 1 to 10.

    Reading the ``unlabeled`` split materialises about 2.8 GB.

    Args:
        root: Directory containing ``stl10_binary/``, and to download into.
        split: ``"train"`` (5,000), ``"test"`` (8,000), ``"unlabeled"`` (100,000, label
            ``-1``) or ``"train+unlabeled"`` (the two concatenated, train first).
        download: Download and extract with torchvision (about 2.6 GB) if not found.

    Returns:
        Images of shape ``(N, 3, 96, 96)``, labels 0 to 9 or ``-1``.

    Raises:
        DatasetNotFoundError: The files were not found and could not be downloaded.
        DatasetFormatError: A file has the wrong size or invalid labels.
    """
    if split not in DATASET_SPLITS["stl10"]:
        raise ValueError(f"split must be one of {list(DATASET_SPLITS['stl10'])}, got {split!r}")
    root_path = _resolve_root(root)
    parts = [_STL10_FILES[part] for part in split.split("+")]
    needed = [name for pair in parts for name in pair if name is not None]
    searched = [] if root_path is None else _unique([root_path / _STL10_FOLDER, root_path])

    def find() -> Path | None:
        for directory in searched:
            if all((directory / name).is_file() for name in needed):
                return directory
        return None

    directory = find()
    if directory is None:
        what = f"the STL-10 {split} split ({_STL10_FOLDER}/ with {', '.join(needed)})"
        remedies = [
            f"{_DOWNLOAD_REMEDY} (about 2.6 GB)",
            "download the binary version, stl10_binary.tar.gz, from "
            "https://cs.stanford.edu/~acoates/stl10/ and extract it in `data.root`, so that "
            f"`data.root`/{_STL10_FOLDER}/ exists",
        ]
        if not download or root_path is None:
            detail = None
            if root_path is None:
                detail = "No root directory (`data.root`) was given"
            raise DatasetNotFoundError(what, searched, remedies, detail=detail)

        def fetch() -> object:
            from torchvision.datasets import STL10

            return STL10(str(root_path), split=split, download=True)

        _torchvision_download(fetch, what, searched, remedies[1:])
        directory = find()
        if directory is None:
            raise DatasetNotFoundError(what, searched, remedies[1:])

    names_file = directory / "class_names.txt"
    classes = STL10_CLASSES
    if names_file.is_file():
        classes = tuple(
            line.strip() for line in names_file.read_text().splitlines() if line.strip()
        )
    counts = [_stl10_count(directory / images_name) for images_name, _ in parts]
    images = torch.empty((sum(counts), 3, _STL10_SIZE, _STL10_SIZE), dtype=torch.uint8)
    out = images.numpy()
    labels = []
    start = 0
    for (images_name, labels_name), count in zip(parts, counts, strict=True):
        labels.append(
            _read_stl10_labels(
                None if labels_name is None else directory / labels_name, count, len(classes)
            )
        )
        stored = np.memmap(
            directory / images_name,
            dtype=np.uint8,
            mode="r",
            shape=(count, 3, _STL10_SIZE, _STL10_SIZE),
        )
        # Copy in chunks, so the page cache, not the process, holds the file.
        for chunk in range(0, count, 4096):
            stop = min(chunk + 4096, count)
            out[start + chunk : start + stop] = stored[chunk:stop].transpose(0, 1, 3, 2)
        del stored
        start += count
    return ImageArrays(images, torch.cat(labels), classes)


# --------------------------------------------------------------------------------------
# Folders of image files
# --------------------------------------------------------------------------------------

IMAGE_EXTENSIONS: Final[frozenset[str]] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
)
_LISTED_BAD_IMAGES: Final = 5


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _image_files(directory: Path) -> list[Path]:
    """Image files under ``directory``, recursively, skipping hidden files and folders."""
    found = []
    for current, subdirs, files in os.walk(directory, followlinks=True):
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(current, name))
    return sorted(found)


def _open_check(path: Path, decode: bool) -> bool:
    """Whether PIL can identify the file (and, with ``decode``, decode all its pixels)."""
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
    except Exception:  # PIL raises OSError, ValueError, SyntaxError, struct.error, ...
        return False
    return True


class ImageFolderDataset(Dataset[tuple[Tensor, int]]):
    """A folder of image files, decoded lazily.

    With ``labelled=True`` the folder holds one subfolder per class (``root/dog/1.jpg``,
    ``root/cat/a/2.png``, ...); the classes are the sorted names of all non-hidden
    subfolders and a sample's label is its class's index, as in torchvision's
    ``ImageFolder``. With ``labelled=False`` every image anywhere under ``root`` is a sample
    with label ``-1``. Files with the extensions in :data:`IMAGE_EXTENSIONS` (any case) are
    used; hidden files and folders are ignored.

    Each image is converted to grayscale (``channels=1``) or RGB (``channels=3``) after
    applying its EXIF orientation, its shorter side is resized to ``image_size`` and the
    centre ``image_size`` x ``image_size`` square is cropped, giving a ``uint8`` tensor
    ``(channels, image_size, image_size)``.

    Construction checks that PIL can identify every file (which reads only its header);
    files it cannot are bad images, handled per ``on_bad_image``: ``"error"`` raises
    :class:`DatasetFormatError` listing them, ``"skip"`` leaves them out with a warning.
    :meth:`verify` decodes every image in full, which also finds truncated files. If an
    image nevertheless fails to decode in ``__getitem__``, ``"error"`` raises and
    ``"skip"`` warns and returns the next readable sample instead.

    Args:
        root: The folder.
        image_size: Side of the square output images, in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        labelled: Whether ``root`` has one subfolder per class.
        on_bad_image: What to do with unreadable files, ``"error"`` or ``"skip"``.

    Raises:
        DatasetNotFoundError: ``root`` does not exist or holds no images.
        DatasetFormatError: Some files are not readable images and ``on_bad_image="error"``.
    """

    def __init__(
        self,
        root: StrPath,
        image_size: int,
        channels: int = 3,
        labelled: bool = True,
        on_bad_image: OnBadImage = "error",
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if on_bad_image not in get_args(OnBadImage):
            raise ValueError(
                f"on_bad_image must be one of {list(get_args(OnBadImage))}, got {on_bad_image!r}"
            )
        self.root = Path(root).expanduser().absolute()
        self.image_size = image_size
        self.channels = channels
        self.labelled = labelled
        self.on_bad_image: OnBadImage = on_bad_image
        self.classes, samples = self._scan()
        bad = [path for path, _ in samples if not _open_check(path, decode=False)]
        if bad:
            samples = self._handle_bad(samples, bad)
        self.samples: list[tuple[Path, int]] = samples

    def _scan(self) -> tuple[tuple[str, ...], list[tuple[Path, int]]]:
        kind = "labelled image folder (one subfolder of images per class)"
        if not self.labelled:
            kind = "folder of images"
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"the {kind} {self.root}",
                [self.root],
                ["create it, or point `data.root` at an existing folder of images"],
                detail="The folder does not exist",
            )
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        remedy = f"put image files ({extensions}) in it, or point `data.root` elsewhere"
        if not self.labelled:
            samples = [(path, -1) for path in _image_files(self.root)]
            if not samples:
                raise DatasetNotFoundError(
                    f"any images in {self.root}", [self.root], [remedy], detail="It has none"
                )
            return (), samples
        class_dirs = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not _is_hidden(p)),
            key=lambda p: p.name,
        )
        samples = []
        empty = []
        for label, class_dir in enumerate(class_dirs):
            files = _image_files(class_dir)
            if not files:
                empty.append(class_dir.name)
            samples.extend((path, label) for path in files)
        loose = [
            p
            for p in self.root.iterdir()
            if p.is_file() and not _is_hidden(p) and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not samples:
            detail = "It has no class subfolders with images in them"
            if loose:
                detail += (
                    f", but {len(loose)} images directly inside it: pass `labelled=False` "
                    "to use them without labels"
                )
            raise DatasetNotFoundError(
                f"the {kind} {self.root}", [self.root], [remedy], detail=detail
            )
        if empty:
            warnings.warn(
                f"{len(empty)} class folder(s) in {self.root} contain no images: "
                f"{', '.join(empty[:_LISTED_BAD_IMAGES])}; they keep their label indices",
                stacklevel=3,
            )
        if loose:
            warnings.warn(
                f"{len(loose)} images directly in {self.root}, outside any class folder, "
                "are ignored",
                stacklevel=3,
            )
        return tuple(p.name for p in class_dirs), samples

    def _handle_bad(
        self, samples: list[tuple[Path, int]], bad: list[Path]
    ) -> list[tuple[Path, int]]:
        if self.on_bad_image == "error":
            raise DatasetFormatError(
                bad,
                "PIL cannot read them as images",
                hint="Delete or replace them, or pass on_bad_image='skip' to leave them out.",
            )
        shown = ", ".join(str(path) for path in bad[:_LISTED_BAD_IMAGES])
        if len(bad) > _LISTED_BAD_IMAGES:
            shown += f" and {len(bad) - _LISTED_BAD_IMAGES} more"
        warnings.warn(
            f"Skipping {len(bad)} unreadable image file(s) in {self.root}: {shown}",
            stacklevel=3,
        )
        drop = set(bad)
        kept = [sample for sample in samples if sample[0] not in drop]
        if not kept:
            raise DatasetNotFoundError(
                f"any readable images in {self.root}",
                [self.root],
                ["replace the unreadable files with good copies"],
                detail=f"All {len(bad)} image files are unreadable",
            )
        return kept

    @property
    def labels(self) -> Tensor:
        """The label of every sample, ``int64`` of shape ``(len(self),)``."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def verify(self) -> list[Path]:
        """Decode every image in full and return those that fail (e.g. truncated files)."""
        return [path for path, _ in self.samples if not _open_check(path, decode=True)]

    def load_image(self, path: Path) -> Tensor:
        """Decode one file into a ``uint8`` tensor ``(channels, image_size, image_size)``."""
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("L" if self.channels == 1 else "RGB")
        tensor = tvf.pil_to_tensor(image)
        tensor = tvf.resize(tensor, [self.image_size], antialias=True)
        return tvf.center_crop(tensor, [self.image_size, self.image_size])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                return self.load_image(path), label
            except Exception as err:  # see _open_check
                if self.on_bad_image == "error":
                    raise DatasetFormatError(path, f"PIL cannot decode it ({err})") from err
                warnings.warn(
                    f"Skipping unreadable image {path} ({err}); using the next one instead",
                    stacklevel=2,
                )
        raise DatasetFormatError(
            [path for path, _ in self.samples], "none of the images can be decoded"
        )


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


def _split_seed(seed: int, split: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**63)


def make_synthetic(
    num_samples: int,
    num_classes: int,
    image_size: int,
    channels: int,
    seed: int = 0,
    *,
    split: str = "train",
) -> ImageArrays:
    """A small deterministic dataset whose classes can actually be learnt, for tests.

    Each class is a fixed random smooth template (uniform noise on a coarse grid, upsampled
    bicubically); each sample is its class's template shifted by a few pixels, with random
    contrast, brightness and Gaussian pixel noise. The templates depend only on ``seed`` (and
    the shape arguments), the samples also on ``split``, so the splits of one seed share
    their classes but not their samples. Classes are balanced and shuffled.

    Args:
        num_samples: Number of images.
        num_classes: Number of classes.
        image_size: Side of the square images, in pixels.
        channels: Number of channels.
        seed: Seed of the templates and samples.
        split: Name of the split, e.g. ``"train"`` or ``"test"``.

    Returns:
        Images of shape ``(num_samples, channels, image_size, image_size)``.

    Examples:
        >>> data = make_synthetic(num_samples=20, num_classes=4, image_size=16, channels=3)
        >>> tuple(data.images.shape), data.images.dtype, data.labels.bincount().tolist()
        ((20, 3, 16, 16), torch.uint8, [5, 5, 5, 5])
        >>> torch.equal(data.images, make_synthetic(20, 4, 16, 3).images)
        True
    """
    for name, value in (
        ("num_samples", num_samples),
        ("num_classes", num_classes),
        ("image_size", image_size),
        ("channels", channels),
    ):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    grid = max(2, image_size // 8)
    shift = image_size // 16
    padded = image_size + 2 * shift
    templates_gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((num_classes, channels, grid, grid), generator=templates_gen)
    templates = nnf.interpolate(coarse, size=(padded, padded), mode="bicubic").clamp(0, 1)

    gen = torch.Generator().manual_seed(_split_seed(seed, split))
    labels = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=gen)]
    offsets = torch.randint(0, 2 * shift + 1, (num_samples, 2, 1), generator=gen)
    rows, cols = (offsets + torch.arange(image_size)).unbind(1)  # each (num_samples, size)
    # Advanced indices around a slice put the channel last: (N, H, W, C).
    images = templates[labels[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    images = images.permute(0, 3, 1, 2)
    contrast = 0.6 + 0.4 * torch.rand((num_samples, 1, 1, 1), generator=gen)
    brightness = 0.2 * torch.rand((num_samples, 1, 1, 1), generator=gen)
    noise = torch.randn(images.shape, generator=gen).mul_(0.08)
    images = noise.add_(images * contrast).add_(brightness)
    pixels = images.mul_(255).round_().clamp_(0, 255).to(torch.uint8).contiguous()
    classes = tuple(f"class_{index}" for index in range(num_classes))
    return ImageArrays(pixels, labels.to(torch.int64), classes)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


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
