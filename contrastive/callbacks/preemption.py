"""Stopping on a signal without losing work, and resuming bit for bit.

:class:`Preemption` turns SIGTERM (what schedulers, ``kill`` and Kubernetes send), SIGINT
(Ctrl-C, and what submitit's local executor sends to cancel a job), SIGUSR1 (SLURM's
``--signal=USR1@<seconds>`` warning) and submitit's warning signal (SIGUSR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise, see :func:`submitit_signal`) into: finish the
current step, write ``last.ckpt``, then exit with ``128 + signal``. Its handler only sets
a flag; the ranks agree on the flag after every step (one all-reduce of one number), so a
signal to any one process stops all of them at the same step, with no collective inside a
signal handler and no hang. A signal on an epoch's last step stops at that epoch's end,
after validation, so the checkpoint is an epoch-end one.

After the checkpoint, rank 0 hands the signal on to the handler the process had before
training started, if it had one of its own: submitit installs
``SignalHandler.checkpoint_and_try_requeue`` for its warning signal at job start, and that
requeues the job (``scontrol requeue`` on SLURM, exit code 144 for the local executor).
Without such a handler, a SLURM job (``SLURM_JOB_ID`` set) is requeued here for the
``requeue`` signals, so a job is never requeued twice. A second SIGINT while the step
finishes raises ``KeyboardInterrupt`` at once, as a second Ctrl-C should.

:class:`RNGStates` puts the global RNG states (python, numpy, torch, CUDA) in every
checkpoint and restores them when training resumes. With the sampler's epoch-seeded order
(:class:`contrastive.data.sampler.ResumableSampler`) and the view generator's state (in
:class:`contrastive.methods.SimCLR`'s checkpoint), a job stopped mid-epoch and restarted
ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from contrastive import distributed
from contrastive.callbacks.checkpoint import ends_epoch, last_checkpoint_path
from contrastive.errors import Preempted

log = logging.getLogger(__name__)

# The signals a job can be asked to stop on (SIGKILL and SIGSTOP cannot be caught).
SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")


def submitit_signal() -> str:
    """The signal submitit warns a job with before its time limit and on preemption
    (``JobEnvironment.USR_SIG``, set by ``SUBMITIT_PREEMPT_SIGNAL``, default ``USR2``), as a
    name such as ``SIGUSR2``; what ``${submitit_signal:}`` gives the configs, so the
    signals Preemption catches follow submitit's.

    Examples:
        >>> submitit_signal() in SIGNALS
        True
    """
    try:
        from submitit import JobEnvironment

        name = str(JobEnvironment.USR_SIG)
    except ImportError:  # the same rule as submitit's, without it
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return name if name.startswith("SIG") else f"SIG{name}"


def slurm_job_id(env: dict[str, str] | None = None) -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` for an array task, else
    ``SLURM_JOB_ID``; ``None`` outside SLURM."""
    env = dict(os.environ) if env is None else env
    array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else env.get("SLURM_JOB_ID")
    if job is not None and not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        raise ValueError(f"unexpected SLURM job id {job!r}; expected digits, or digits_digits")
    return job


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue <job_id>``; ``False`` (with a warning) when it fails."""
    try:
        result = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("could not requeue SLURM job %s: %s", job_id, error)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed: %s", job_id, result.stderr.strip())
        return False
    return True


class Preemption(pl.Callback):
    """On a stop signal: finish the step, write ``last.ckpt``, hand on or requeue, stop.

    Args:
        signals: the signal names to catch, from :data:`SIGNALS` (repeats are ignored);
            ``None``: SIGTERM, SIGINT, SIGUSR1 and :func:`submitit_signal`.
        requeue: under SLURM (``SLURM_JOB_ID`` set), issue ``scontrol requeue`` on rank 0
            after the checkpoint is written, for these signals, unless the process had a
            handler of its own for the signal (submitit's), which then requeues instead.
    """

    def __init__(
        self,
        signals: Sequence[str] | None = None,
        requeue: Sequence[str] = ("SIGUSR1",),
    ) -> None:
        if signals is None:
            signals = ("SIGTERM", "SIGINT", "SIGUSR1", submitit_signal())
        unknown = sorted((set(signals) | set(requeue)) - set(SIGNALS))
        if unknown:
            raise ValueError(f"unknown signal(s) {unknown}; choose from {list(SIGNALS)}")
        self.signals = list(dict.fromkeys(signal.Signals[name] for name in signals))
        self.requeue = {signal.Signals[name] for name in requeue}
        self.received = 0
        self._previous: dict[int, Any] = {}
        self._chained: dict[int, Callable[[int, Any], Any]] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        # Only a flag: the step in progress finishes, and the ranks agree after it.
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        if not self.received:
            self.received = signum

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Before Lightning registers its own handlers: what the process itself had, such
        # as submitit's checkpoint_and_try_requeue (Python's KeyboardInterrupt raiser for
        # SIGINT is no handler of the job's).
        self._chained = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            handler = signal.getsignal(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                self._chained[signum] = handler

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its own handlers (which run a collective inside the
        # handler and stop only the signalled rank): these replace them for training.
        self.received = 0
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # The last batch of an epoch (cut by limit_train_batches or not) stops at the
        # epoch's end instead, after validation.
        if ends_epoch(trainer):
            return
        self._stop_if_signalled(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer, pl_module)

    def _stop_if_signalled(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signum = int(distributed.max_over_ranks(self.received, pl_module.device))
        if not signum:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes
        chain = self._chained.get(signum) if trainer.is_global_zero else None
        requeued = None
        if trainer.is_global_zero and chain is None and signum in self.requeue:
            job = slurm_job_id()
            if job is not None and requeue_slurm_job(job):
                requeued = job
        self._restore_handlers()
        raise Preempted(
            signum,
            trainer.global_step,
            path if trainer.is_global_zero else None,
            requeued,
            chain,
        )


def _numpy_state() -> list[Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss]


def _set_numpy_state(state: list[Any]) -> None:
    kind, keys, pos, has_gauss, gauss = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


class RNGStates(pl.Callback):
    """Every rank's global RNG states (python, numpy, torch, CUDA) in every checkpoint,
    restored when training starts from one (after the data loaders exist, whose start
    draws from the torch RNG): each rank gets its own back, so a data-parallel run
    restarted at a checkpoint (an elastic restart, a requeue) replays what it would have
    drawn. Stored as tensors and plain values, readable with ``weights_only``. A resume on
    another number of processes restores the states of the ranks the checkpoint has and
    leaves the others as seeded."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _local_state() -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": list(random.getstate()),
            "numpy": _numpy_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": distributed.all_gather_object(self._local_state())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict or None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is None:
            return
        saved, self._pending = self._pending, None
        ranks = saved.get("ranks", [saved])  # a checkpoint from before per-rank states
        if trainer.global_rank >= len(ranks):
            return
        state = ranks[trainer.global_rank]
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        _set_numpy_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
