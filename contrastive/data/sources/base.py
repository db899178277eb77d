"""What the source modules share: :class:`ImageArrays`, the root and search-path helpers
and the torchvision download wrapper."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import torch
from torch import Tensor

from contrastive.data.errors import DatasetNotFoundError

__all__ = ["ImageArrays", "StrPath"]

StrPath: TypeAlias = "str | os.PathLike[str]"

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
