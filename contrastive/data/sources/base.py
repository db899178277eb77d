"""What every source shares: :class:`ImageArrays`, the :class:`Source` interface with its
declared :class:`Splits`, and :func:`find_or_download`, the one "look for the files, refuse
or download them with torchvision, look again" flow of the downloadable datasets."""

from __future__ import annotations

import abc
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeAlias, TypeVar

import torch
from torch import Tensor

from contrastive.data.errors import DatasetNotFoundError

__all__ = ["ImageArrays", "LazyImages", "Source", "Splits", "StrPath", "find_or_download"]

StrPath: TypeAlias = "str | os.PathLike[str]"
T = TypeVar("T")


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


class LazyImages(Protocol):
    """A split read one image at a time (an image folder): ``(uint8 image, label)`` items,
    with every label and the class names at hand without decoding any image."""

    classes: tuple[str, ...]

    @property
    def labels(self) -> Tensor: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...


@dataclass(frozen=True)
class Splits:
    """A source's splits, and which of them a job uses for what.

    Attributes:
        pretrain: The split pretraining draws its batches from.
        bank: The labelled split of the kNN bank and of a linear probe's training.
        test: The split kNN and probes are scored on.
        valid: Every split :meth:`Source.load` accepts.
    """

    pretrain: str
    bank: str
    test: str
    valid: tuple[str, ...]

    def used(self, labelled: bool = True) -> tuple[str, ...]:
        """The splits a job loads, each once: the three roles, or for unlabelled data
        only the pretraining split (there is nothing to score against)."""
        roles = (self.pretrain, self.bank, self.test) if labelled else (self.pretrain,)
        return tuple(dict.fromkeys(roles))


class Source(abc.ABC):
    """One dataset with its own options: its :attr:`name`, its declared :attr:`splits`
    and :meth:`load`, which reads one split. Constructing a source touches no file.

    Attributes:
        name: The dataset's name, e.g. ``"fashion_mnist"`` (the key of the registry,
            :data:`contrastive.data.sources.SOURCES`).
        splits: Which split pretrains, builds the kNN bank and tests, and the valid ones.
        labelled: Whether the samples carry class labels (an unlabelled source is only
            pretrained on; nothing is scored).
        num_classes: The number of classes where the source knows it before reading any
            file; ``None`` where only the data can tell (an image folder's class folders).
    """

    name: ClassVar[str]
    splits: ClassVar[Splits]
    labelled: bool = True
    num_classes: int | None = None

    def load(self, split: str) -> ImageArrays | LazyImages:
        """Read ``split``: in memory as :class:`ImageArrays`, or lazily (an image folder)."""
        self.check_split(split)
        return self._load(split)

    @classmethod
    def check_split(cls, split: str) -> None:
        """Raise ``ValueError`` naming the valid splits unless ``split`` is one."""
        if split not in cls.splits.valid:
            raise ValueError(
                f"Unknown split {split!r} for {cls.name}; valid splits are: "
                f"{', '.join(cls.splits.valid)}"
            )

    @abc.abstractmethod
    def _load(self, split: str) -> ImageArrays | LazyImages: ...

    def __repr__(self) -> str:
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        options = ", ".join(f"{n}={getattr(self, n)!r}" for n in names if hasattr(self, n))
        return f"{type(self).__name__}({options})"


def _resolve_root(root: StrPath | None) -> Path | None:
    return None if root is None else Path(root).expanduser().absolute()


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for path in paths:
        seen.setdefault(path, None)
    return list(seen)


def _find_dir(searched: Sequence[Path], needed: Sequence[str]) -> Path | None:
    """The first of ``searched`` holding every file named in ``needed``."""
    for directory in searched:
        if all((directory / name).is_file() for name in needed):
            return directory
    return None


_NO_ROOT = "No root directory (`data.source.root`) was given"


def download_remedy(size: str) -> str:
    """How to have torchvision download a dataset of about ``size``."""
    return (
        "set `data.source.download=true` (the `download=True` argument) to download it into "
        f"`data.source.root` with torchvision ({size})"
    )


def find_or_download(
    what: str,
    searched: Sequence[Path],
    find: Callable[[], T | None],
    *,
    root: Path | None,
    download: bool,
    fetch: Callable[[str], object],
    size: str,
    remedies: Sequence[str] = (),
    diagnose: Callable[[], str | None] = lambda: None,
) -> T:
    """Find a dataset's files, else download them with torchvision and find them again.

    Args:
        what: What is looked for, e.g. ``"the CIFAR-10 test split (cifar-10-batches-py/
            with test_batch, batches.meta)"``; it begins every error message.
        searched: The places ``find`` looks in, in order; every message lists them.
        find: Looks for the files; what it returns (``None``: not found) is returned.
        root: The download directory (``data.source.root``); ``None``: none was given.
        download: Whether downloading is allowed (``data.source.download``).
        fetch: The torchvision download, called with ``str(root)``.
        size: The download's size, e.g. ``"about 163 MB"``, for the remedy.
        remedies: The ways to get the files other than this download (an apt package,
            an archive to extract by hand); every message offers them.
        diagnose: Why the files are not found, when more can be said than "not there",
            e.g. a folder that lacks some files.

    Raises:
        DatasetNotFoundError: Not found, and downloading was not allowed, was not possible
            (no ``root``), failed, or left the files elsewhere.
    """
    found = find()
    if found is not None:
        return found
    if not download or root is None:
        if root is None and download:
            detail: str | None = (
                "It cannot be downloaded because no root directory (`data.source.root`) was given"
            )
        elif root is None and not searched:
            detail = _NO_ROOT
        else:
            detail = diagnose()
        raise DatasetNotFoundError(what, searched, [download_remedy(size), *remedies], detail)
    try:
        fetch(str(root))
    except (OSError, RuntimeError) as err:
        raise DatasetNotFoundError(
            what, searched, remedies, detail=f"Downloading it with torchvision failed: {err}"
        ) from err
    found = find()
    if found is None:
        diagnosis = diagnose()
        detail = "torchvision downloaded it, but not there"
        raise DatasetNotFoundError(
            what, searched, remedies, detail=f"{detail}: {diagnosis}" if diagnosis else detail
        )
    return found
