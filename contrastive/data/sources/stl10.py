"""STL-10 (Coates et al., 2011) from its raw binary files: 96 x 96 RGB, 10 classes plus
100,000 unlabelled images."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Final, Literal, TypeAlias, get_args

import numpy as np
import torch
from torch import Tensor

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

__all__ = ["STL10", "STL10_CLASSES", "Stl10Split", "load_stl10"]

Stl10Split: TypeAlias = Literal["train", "test", "unlabeled", "train+unlabeled"]

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
    if split not in get_args(Stl10Split):
        raise ValueError(f"split must be one of {list(get_args(Stl10Split))}, got {split!r}")
    root_path = _resolve_root(root)
    parts = [_STL10_FILES[part] for part in split.split("+")]
    needed = [name for pair in parts for name in pair if name is not None]
    searched = [] if root_path is None else _unique([root_path / _STL10_FOLDER, root_path])

    def fetch(directory: str) -> object:
        from torchvision import datasets

        return datasets.STL10(directory, split=split, download=True)

    directory = find_or_download(
        f"the STL-10 {split} split ({_STL10_FOLDER}/ with {', '.join(needed)})",
        searched,
        lambda: _find_dir(searched, needed),
        root=root_path,
        download=download,
        fetch=fetch,
        size="about 2.6 GB",
        remedies=[
            "download the binary version, stl10_binary.tar.gz, from "
            "https://cs.stanford.edu/~acoates/stl10/ and extract it in `data.source.root`, "
            f"so that `data.source.root`/{_STL10_FOLDER}/ exists"
        ],
    )

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


class STL10(Source):
    """STL-10 (:func:`load_stl10`): pretrains on ``train+unlabeled`` (105,000 images, the
    unlabelled ones with label ``-1``), builds the kNN bank on the 5,000 labelled
    ``train`` images and tests on the 8,000 ``test`` images.

    Args:
        root: The directory holding ``stl10_binary/``, and to download into.
        download: Let torchvision download and extract the archive when it is not found.
    """

    name: ClassVar[str] = "stl10"
    splits: ClassVar[Splits] = Splits(
        "train+unlabeled", "train", "test", valid=get_args(Stl10Split)
    )
    num_classes = len(STL10_CLASSES)

    def __init__(self, root: str | None = "data", download: bool = False):
        self.root = root
        self.download = download

    def _load(self, split: str) -> ImageArrays:
        return load_stl10(self.root, split, self.download)  # type: ignore[arg-type]
