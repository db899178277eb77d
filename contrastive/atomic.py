"""Writing files so that a crash or a full disk never leaves a half-written one in their
place.

Everything the jobs write that a later job reads (Lightning checkpoints, ``backbone.pt``,
``probe_head.pt``, ``metrics.json``, the media callback's ``history.jsonl``) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same directory, are flushed
and fsynced, then renamed over the target (``os.replace`` is atomic on POSIX), and the
directory is fsynced so the rename survives a power cut. A crash part-way leaves the
previous file untouched.

A write that the filesystem refuses (full: ``ENOSPC``, ``EDQUOT``; not writable:
``EACCES``, ``EPERM``, ``EROFS``), at the temporary file, its fsync or the rename, removes
the temporary file and raises :class:`~contrastive.errors.StorageError`, whose message
names the file, its directory, the reason and the free space there; the CLI prints it and
exits with status 2. Any other ``OSError`` propagates unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from contrastive.errors import StorageError

# What a full or unwritable filesystem answers; other OSErrors are not about the disk.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _size(count: float) -> str:
    for unit in ("KiB", "MiB", "GiB"):
        count /= 1024
        if count < 1024 or unit == "GiB":
            return f"{count:.1f} {unit}"
    raise AssertionError  # unreachable


def free_space(directory: Path) -> str:
    """``"<free> free of <total>"`` on the filesystem holding ``directory`` (its nearest
    existing parent), or ``"unknown"``."""
    for place in (directory, *directory.parents):
        if place.exists():
            try:
                usage = shutil.disk_usage(place)
            except OSError:
                break
            return f"{_size(usage.free)} free of {_size(usage.total)}"
    return "unknown"


def storage_error(path: Path, error: OSError, existed: bool) -> StorageError:
    """The user-facing error for ``error`` (one of :data:`STORAGE_ERRNOS`) raised while
    writing ``path``; ``existed``: whether a previous ``path`` is there, untouched."""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    reason = f"{error.strerror or error} ({name})"
    directory = path.parent
    kept = (
        f"the previous {path.name} is intact"
        if existed
        else f"no {path.name} was written (nor any part of it)"
    )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "Free space there (or raise the quota)"
    else:
        fix = f"Make {directory} writable"
    message = (
        f"cannot write {path}: {reason}; {directory} has {free_space(directory)}. "
        f"{kept[0].upper()}{kept[1:]}. {fix}, or move the run directory to another disk "
        "and pass that as hydra.run.dir, then rerun the same command (a pretraining job "
        "resumes from its last whole checkpoint)."
    )
    return StorageError(message, path=path, errno=error.errno)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a new binary file and put it at ``path``, all or nothing.

    Raises :class:`~contrastive.errors.StorageError` when the disk is full or not
    writable (the previous ``path``, if any, untouched); other ``OSError``\\ s as they
    come."""
    path = Path(path)
    existed = path.exists()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a read-only disk may refuse this too
                temporary.unlink(missing_ok=True)
            raise
    except Exception as error:
        cause = _disk_cause(error)
        if cause is None:
            raise
        raise storage_error(path, cause, existed) from error
    _fsync_directory(path.parent)


def _disk_cause(error: BaseException) -> OSError | None:
    """``error`` or the OSError it wraps (``torch.save`` may re-raise a failed write as
    another error), when its errno is one of :data:`STORAGE_ERRNOS`."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)``, all or nothing (see :func:`atomic_write`)."""
    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write_text(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)`` (UTF-8), all or nothing (see :func:`atomic_write`)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda file: file.write(data))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through :func:`atomic_save` (local paths only; a
    remote URL goes to Lightning's own writer)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_save(checkpoint, path)
