"""Errors meant for the person running a job: the CLI prints their message, no traceback."""

from __future__ import annotations

import signal
from pathlib import Path


class ConfigError(ValueError):
    """A configuration that composes but cannot work; the message names the key(s) to fix."""


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint; exit with :attr:`exit_code`."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, requeued: str | None):
        self.signum = signum
        self.exit_code = 128 + signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        where = f"wrote {checkpoint}" if checkpoint else "wrote no checkpoint (this process)"
        then = (
            f"requeued SLURM job {requeued}"
            if requeued
            else "rerun the same command (resume=auto) to continue"
        )
        super().__init__(f"stopped by {name} after step {step}: {where}; {then}")


class TrainingHalted(RuntimeError):
    """Training stopped itself (a non-finite loss or gradient); the message names the step
    and the checkpoint it left."""
