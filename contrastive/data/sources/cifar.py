"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the pickled "python version" batches:
32 x 32 RGB, 10 or 100 classes."""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

from contrastive.data import checksums
from contrastive.data.errors import DatasetFormatError
from contrastive.data.sources.base import (
    ImageArrays,
    Source,
    Splits,
    StrPath,
    _find_dir,
    _resolve_root,
    _unique,
    find_or_download,
)

__all__ = ["CIFAR10", "CIFAR10_CLASSES", "CIFAR100", "Cifar", "CifarVariant", "load_cifar"]

CifarVariant: TypeAlias = Literal["cifar10", "cifar100"]

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
                path, content, "Delete the folder and download again with data.source.download=true"
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

    def fetch(directory: str) -> object:
        from torchvision import datasets

        cls = datasets.CIFAR10 if variant == "cifar10" else datasets.CIFAR100
        return cls(directory, train=train, download=True)

    directory = find_or_download(
        f"the {spec.title} {'training' if train else 'test'} split "
        f"({spec.folder}/ with {', '.join(needed)})",
        searched,
        lambda: _find_dir(searched, needed),
        root=root_path,
        download=download,
        fetch=fetch,
        size=f"about {spec.archive_mb} MB",
        remedies=[
            f"download the python version, {spec.archive}, from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it in "
            f"`data.source.root`, so that `data.source.root`/{spec.folder}/ exists"
        ],
        diagnose=lambda: _cifar_detail(root_path, spec, needed),
    )

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
        return None  # find_or_download says so
    folder = root / spec.folder
    if folder.is_dir():
        missing = [name for name in needed if not (folder / name).is_file()]
        return f"{folder} exists but lacks {', '.join(missing)}"
    if (root / spec.archive).is_file():
        return f"{root / spec.archive} exists but has not been extracted"
    return None


class Cifar(Source):
    """CIFAR-10 or CIFAR-100 (:func:`load_cifar`): 50,000 training and 10,000 test images,
    32 x 32 RGB; pretrains and builds the kNN bank on ``train``, tests on ``test``. Use
    :class:`CIFAR10` or :class:`CIFAR100`.

    Args:
        root: The directory holding the extracted folder, and to download into.
        download: Let torchvision download and extract the archive when it is not found.
        verify: Check the official files' MD5 sums (:mod:`contrastive.data.checksums`)
            before using them.
    """

    name: ClassVar[CifarVariant]
    splits: ClassVar[Splits] = Splits("train", "train", "test", valid=("train", "test"))

    def __init__(self, root: str | None = "data", download: bool = False, verify: bool = True):
        self.root = root
        self.download = download
        self.verify = verify

    def _load(self, split: str) -> ImageArrays:
        return load_cifar(self.root, self.name, split == "train", self.download, self.verify)


class CIFAR10(Cifar):
    """CIFAR-10: 10 classes (:class:`Cifar`)."""

    name: ClassVar[CifarVariant] = "cifar10"
    num_classes = _CIFAR_SPECS["cifar10"].num_classes


class CIFAR100(Cifar):
    """CIFAR-100 with its 100 fine labels (:class:`Cifar`)."""

    name: ClassVar[CifarVariant] = "cifar100"
    num_classes = _CIFAR_SPECS["cifar100"].num_classes
