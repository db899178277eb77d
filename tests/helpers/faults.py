"""Callbacks for the fault-tolerance tests, added with ``+callbacks.<name>=...``: a real
signal after a given step, the weights around one step, a disk that fills up or turns
read-only; and :func:`refuse_writes`, the same disk fault armed directly."""

from __future__ import annotations

import builtins
import errno
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch


class SignalAtStep(pl.Callback):
    """A real signal once, when ``global_step`` reaches ``step`` on ``rank`` (every rank
    when ``rank`` is ``None``): at the end of a training batch, or of a validation batch
    (``during="validation"``). ``group`` sends it to the whole process group, DataLoader
    workers included, as a terminal's Ctrl-C does; else to this process only. With
    ``marker`` (a file path) it is sent only if that file does not exist yet, and creates
    it: a requeued job is not signalled again."""

    def __init__(
        self,
        step: int,
        signal_name: str = "SIGTERM",
        rank: int | None = None,
        during: str = "train",
        group: bool = False,
        marker: str | None = None,
    ):
        self.step = step
        self.marker = marker  # sent once per run directory: not again after a requeue
        self.signum = signal.Signals[signal_name]
        self.rank = rank
        self.during = during
        self.group = group
        self.sent = False

    def _send(self, trainer: pl.Trainer) -> None:
        if self.sent or trainer.global_step < self.step:
            return
        if self.marker is not None and os.path.exists(self.marker):
            return
        if self.rank is None or trainer.global_rank == self.rank:
            self.sent = True
            if self.marker is not None:
                open(self.marker, "w").close()
            if self.group:
                os.killpg(os.getpgid(0), self.signum)
            else:
                os.kill(os.getpid(), self.signum)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.during == "train":
            self._send(trainer)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if self.during == "validation" and trainer.training is False and trainer.state.fn == "fit":
            self._send(trainer)


class WeightsAroundStep(pl.Callback):
    """Copies of every parameter just before and just after training batch ``batch_idx``
    of the first epoch, in :attr:`seen` (``"before"`` and ``"after"``)."""

    seen: ClassVar[dict[str, dict[str, torch.Tensor]]] = {}

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def _copy(self, pl_module: pl.LightningModule, key: str) -> None:
        WeightsAroundStep.seen[key] = {
            name: p.detach().clone() for name, p in pl_module.named_parameters()
        }

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 0 and batch_idx == self.batch_idx:
            self._copy(pl_module, "before")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.current_epoch == 0 and args[-1] == self.batch_idx:
            self._copy(pl_module, "after")


class NaNGradientAtStep(pl.Callback):
    """After the backward pass of ``step``, on ``rank`` only, one gradient becomes NaN (the
    other ranks' gradients stay finite: the guard must still stop them all)."""

    def __init__(self, step: int, rank: int = 0) -> None:
        self.step = step
        self.rank = rank

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(float("nan"))


class TouchOnLoad:
    """Unpickling this creates ``path``: a stand-in for a checkpoint that runs code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mknod, (self.path,))


class HandlerOfItsOwn(pl.Callback):
    """At ``setup`` (before :class:`contrastive.callbacks.Preemption` looks), a handler for
    ``signal_name`` that appends the signal's number to ``path``: a stand-in for the one
    submitit installs at job start."""

    def __init__(self, signal_name: str, path: str) -> None:
        self.signum = signal.Signals[signal_name]
        self.path = path

    def _record(self, signum: int, frame: Any) -> None:
        with open(self.path, "a") as file:
            file.write(f"{signum}\n")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        signal.signal(self.signum, self._record)


class RecordSamples(pl.Callback):
    """Which training samples each step of this process drew: every batch the training
    loader fetches (with ``data.num_workers=0``, in this process) is appended to
    ``<folder>/samples.<pid>.rank<r>.jsonl`` as ``{"epoch", "step", "indices"}``, ``step``
    being the global step when the process fetched its first batch (a resumed process
    starts there). Read them back with :func:`samples_by_step`."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.first_step: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule  # type: ignore[attr-defined]
        dataset = datamodule._load(datamodule.splits.pretrain)
        fetch = dataset.__getitems__
        path = os.path.join(self.folder, f"samples.{os.getpid()}.rank{trainer.global_rank}.jsonl")
        os.makedirs(self.folder, exist_ok=True)

        def recorded(indices: Any) -> Any:
            if trainer.training:  # not the kNN bank, which reads the same split
                if self.first_step is None:
                    self.first_step = trainer.global_step
                line = {"epoch": trainer.current_epoch, "step": self.first_step}
                with open(path, "a") as file:
                    file.write(json.dumps({**line, "indices": [int(i) for i in indices]}) + "\n")
            return fetch(indices)

        dataset.__getitems__ = recorded


def samples_by_step(folder: str, steps_per_epoch: int) -> dict[int, set[int]]:
    """The samples of each global step across every rank that recorded into ``folder``
    (:class:`RecordSamples`). The processes of one launch start at the same step; a later
    launch (a resume, on any number of ranks) replaces every step from its first on,
    including a batch the stopped launch had fetched ahead but not trained on."""
    launches: dict[int, list[list[dict[str, Any]]]] = {}
    for path in Path(folder).glob("samples.*.jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        if lines:
            launches.setdefault(lines[0]["step"], []).append(lines)
    by_step: dict[int, set[int]] = {}
    for first in sorted(launches):
        by_step = {step: samples for step, samples in by_step.items() if step < first}
        for lines in launches[first]:  # one process (rank) of this launch
            epoch, position = lines[0]["epoch"], first - lines[0]["epoch"] * steps_per_epoch
            for line in lines:
                if line["epoch"] != epoch:
                    epoch, position = line["epoch"], 0
                by_step.setdefault(epoch * steps_per_epoch + position, set()).update(
                    line["indices"]
                )
                position += 1
    return dict(sorted(by_step.items()))


class _FillingFile:
    """A binary file on a disk with ``room`` bytes left: the write that passes it stores
    what fits, then fails with ``code`` as ``write(2)`` does."""

    def __init__(self, file: Any, code: int, room: int) -> None:
        self.file = file
        self.code = code
        self.room = room

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])
            self.room = 0
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return int(self.file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.file.close()


def refuse_writes(name: str, error: str = "ENOSPC", stage: str = "write") -> Callable[[], None]:
    """From now on, in this process, each write of a file called ``name`` through
    :mod:`contrastive.atomic` fails with ``error`` (an errno name) where a full or
    read-only disk would fail it: ``stage="open"`` (the temporary file cannot be
    created), ``"write"`` (the first 256 bytes are stored, then the disk is full) or
    ``"replace"`` (the rename over ``name`` is refused). Returns the undo."""
    from contrastive import atomic

    code = getattr(errno, error)
    previous_open = atomic.__dict__.get("open")  # an earlier fault's, or none
    real_open, real_replace = previous_open or builtins.open, os.replace

    def temporary_of_name(file: Any) -> bool:  # atomic's temporaries are .<name>.<pid>.tmp
        return Path(file).name.startswith(f".{name}.")

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not temporary_of_name(file) or stage == "replace":
            return real_open(file, mode, *args, **kwargs)
        if stage == "open":
            raise OSError(code, os.strerror(code), str(file))
        return _FillingFile(real_open(file, mode, *args, **kwargs), code, room=256)

    def fake_replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if stage == "replace" and Path(target).name == name:
            raise OSError(code, os.strerror(code), str(source), None, str(target))
        real_replace(source, target, *args, **kwargs)

    atomic.open = fake_open  # type: ignore[attr-defined] # a module global, ahead of the builtin
    os.replace = fake_replace

    def undo() -> None:
        if previous_open is None:
            del atomic.open  # type: ignore[attr-defined]
        else:
            atomic.open = previous_open  # type: ignore[attr-defined]
        os.replace = real_replace

    return undo


class DiskFaultAtStep(pl.Callback):
    """:func:`refuse_writes` for ``name``, armed at the end of training step ``step``
    (before the checkpoint callbacks of that step run: Lightning runs them last)."""

    def __init__(self, step: int, name: str, error: str = "ENOSPC", stage: str = "write"):
        self.step = step
        self.fault = (name, error, stage)
        self.armed = False

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if not self.armed and trainer.global_step >= self.step:
            self.armed = True
            refuse_writes(*self.fault)
