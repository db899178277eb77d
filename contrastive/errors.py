"""Errors meant for the person running a job: the CLI prints their message, no traceback."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration that composes but cannot work; the message names the key(s) to fix."""


class StorageError(OSError):
    """A file the job must write could not be: the disk is full or not writable. The
    message names the file, its directory, the reason and the free space there, and says
    that the previous file is intact; :attr:`errno` is the filesystem's answer
    (``ENOSPC``, ``EROFS``, ...) and :attr:`filename` the file."""

    def __init__(self, message: str, path: Path, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = str(path)

    def __str__(self) -> str:
        return str(self.args[0])


class RunDirectoryInUse(ConfigError):
    """Another job holds the run directory's lock (:mod:`contrastive.jobs.lock`); the
    message names the holder and what to do."""

    def __init__(self, run_dir: Path, lock: Path, holder: str, reason: str):
        self.run_dir = run_dir
        self.lock = lock
        super().__init__(
            f"run directory {run_dir} is in use by another job: {holder} ({reason}). "
            "Wait for that job to end, or give this one another directory "
            f"(hydra.run.dir=...); if that job is gone, delete {lock}"
        )


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint; exit with :attr:`exit_code`,
    after calling :attr:`chain` (the handler the process had for the signal before
    training, such as submitit's requeue) when there is one."""

    def __init__(
        self,
        signum: int,
        step: int,
        checkpoint: Path | None,
        requeued: str | None,
        chain: Callable[[int, Any], Any] | None = None,
    ):
        self.signum = signum
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint
        self.chain = chain
        name = signal.Signals(signum).name
        where = f"wrote {checkpoint}" if checkpoint else "wrote no checkpoint (this process)"
        if requeued:
            then = f"requeued SLURM job {requeued}"
        elif chain is not None:
            handler = getattr(chain, "__qualname__", type(chain).__name__)
            then = f"handing {name} on to the job's own handler ({handler})"
        else:
            then = "rerun the same command (resume=auto) to continue"
        super().__init__(f"stopped by {name} after step {step}: {where}; {then}")


class TrainingHalted(RuntimeError):
    """Training stopped itself (a non-finite loss or gradient); the message names the step
    and the checkpoint it left."""
