"""Errors raised when a dataset is missing or its files are damaged.

Both carry a complete, human-readable message, so that a user who only sees the last line of
a traceback still learns what was looked for, where, and what to do about it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["DatasetFormatError", "DatasetNotFoundError"]

_MAX_LISTED_FILES = 5


def _join_clauses(clauses: Sequence[str]) -> str:
    if len(clauses) <= 1:
        return "".join(clauses)
    return "; ".join(clauses[:-1]) + "; or " + clauses[-1]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found anywhere it was looked for, nor downloaded.

    Args:
        what: The dataset and files that were looked for, e.g.
            ``"Fashion-MNIST training split (train-images-idx3-ubyte[.gz], ...)"``.
        searched: Every location that was looked in, in search order.
        remedies: Ways to get the dataset, each a clause that completes "To get it, ...".
        detail: Anything else worth knowing, e.g. why a download failed.

    Examples:
        >>> err = DatasetNotFoundError(
        ...     "CIFAR-10 (cifar-10-batches-py/)", ["/data"], ["set `data.source.download=true`"]
        ... )
        >>> print(err)
        Could not find CIFAR-10 (cifar-10-batches-py/). Looked in: /data. To get it, set `data.source.download=true`.
        >>> isinstance(err, FileNotFoundError)
        True
    """

    def __init__(
        self,
        what: str,
        searched: Iterable[str | os.PathLike[str]],
        remedies: Sequence[str],
        detail: str | None = None,
    ) -> None:
        self.what = what
        self.searched: tuple[Path, ...] = tuple(Path(place) for place in searched)
        self.remedies: tuple[str, ...] = tuple(remedies)
        self.detail = detail
        if self.searched:
            where = "Looked in: " + ", ".join(str(place) for place in self.searched) + "."
        else:
            where = "No location was searched."
        parts = [f"Could not find {what}.", where]
        if detail:
            parts.append(detail.rstrip(".") + ".")
        if self.remedies:
            parts.append("To get it, " + _join_clauses(self.remedies).rstrip(".") + ".")
        super().__init__(" ".join(parts))

    def __reduce__(self) -> tuple[type[DatasetNotFoundError], tuple[object, ...]]:
        return type(self), (self.what, self.searched, self.remedies, self.detail)


class DatasetFormatError(ValueError):
    """One or more dataset files exist but are corrupt, truncated or in the wrong format.

    Args:
        paths: The offending file, or several of them.
        reason: What is wrong with it, e.g. ``"bad magic number 1234, expected 2051"``.
        hint: What to do about it; by default, to delete or replace the file(s).

    Examples:
        >>> print(DatasetFormatError("/data/train-labels-idx1-ubyte.gz", "file is truncated"))
        /data/train-labels-idx1-ubyte.gz is corrupt or not in the expected format: file is truncated. Delete it or replace it with a good copy, then try again.
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        reason: str,
        hint: str | None = None,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths: tuple[Path, ...] = tuple(Path(path) for path in paths)
        self.reason = reason
        self.hint = hint
        reason = reason.rstrip(".")
        if not self.paths:
            message = f"Dataset files are corrupt or not in the expected format: {reason}."
            default_hint = "Delete or replace the damaged files, then try again."
        elif len(self.paths) == 1:
            message = f"{self.paths[0]} is corrupt or not in the expected format: {reason}."
            default_hint = "Delete it or replace it with a good copy, then try again."
        else:
            listed = ", ".join(str(path) for path in self.paths[:_MAX_LISTED_FILES])
            more = len(self.paths) - _MAX_LISTED_FILES
            if more > 0:
                listed += f" and {more} more"
            message = f"{len(self.paths)} files are corrupt or unreadable ({reason}): {listed}."
            default_hint = "Delete them or replace them with good copies, then try again."
        super().__init__(f"{message} {hint or default_hint}")

    @property
    def path(self) -> Path | None:
        """The first offending file, if any was named."""
        return self.paths[0] if self.paths else None

    def __reduce__(self) -> tuple[type[DatasetFormatError], tuple[object, ...]]:
        return type(self), (self.paths, self.reason, self.hint)
