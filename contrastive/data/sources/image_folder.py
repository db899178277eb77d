"""Folders of image files, decoded lazily: one subfolder per class, or any images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import ClassVar, Final, Literal, TypeAlias, get_args

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as tvf

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources.base import Source, Splits, StrPath

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "ImageFolderDataset", "OnBadImage"]

OnBadImage: TypeAlias = Literal["skip", "error"]


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
                ["create it, or point `data.source.root` at an existing folder of images"],
                detail="The folder does not exist",
            )
        extensions = " ".join(sorted(IMAGE_EXTENSIONS))
        remedy = f"put image files ({extensions}) in it, or point `data.source.root` elsewhere"
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


class ImageFolder(Source):
    """A folder with ``train/`` and ``val/`` subfolders, each read by
    :class:`ImageFolderDataset`: pretrains and builds the kNN bank on ``train``, tests on
    ``val``. The classes are the class folders, so :attr:`num_classes` is ``None`` until
    they are read; with ``labelled=False`` only ``train`` is used, for pretraining.

    Args:
        root: The folder holding ``train/`` and ``val/``.
        image_size: Side of the square images, in pixels (shorter side resized to it,
            then centre-cropped).
        channels: 1 (grayscale) or 3 (RGB).
        labelled: Whether ``train/`` and ``val/`` hold one subfolder per class.
        on_bad_image: What to do with unreadable files, ``"error"`` or ``"skip"``.
    """

    name: ClassVar[str] = "image_folder"
    splits: ClassVar[Splits] = Splits("train", "train", "val", valid=("train", "val"))

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        channels: int = 3,
        labelled: bool = True,
        on_bad_image: OnBadImage = "error",
    ) -> None:
        if on_bad_image not in get_args(OnBadImage):
            raise ValueError(
                f"data.source.on_bad_image must be error or skip, got {on_bad_image!r}"
            )
        self.root = root
        self.image_size = image_size
        self.channels = channels
        self.labelled = labelled
        self.on_bad_image: OnBadImage = on_bad_image

    def _load(self, split: str) -> ImageFolderDataset:
        return ImageFolderDataset(
            f"{self.root}/{split}",
            image_size=self.image_size,
            channels=self.channels,
            labelled=self.labelled,
            on_bad_image=self.on_bad_image,
        )
