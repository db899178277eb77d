"""One writer per run directory: the lock file ``<run dir>/run.lock``.

The global rank zero of a job takes the lock when the job starts (:class:`~contrastive.jobs.run.Run`
does it) and removes it when the job leaves, however it leaves. The lock is a small JSON
record of who holds it: process id, host, the process's start time, the SLURM job
(``<array job>_<task>`` for an array task), torchrun's ``TORCHELASTIC_RUN_ID``, when it
started and the command line. A job that finds a lock already there decides from that
record:

- the same SLURM job or the same torchrun run (a requeue or an elastic restart, on this
  host or another): take it over, with a log line;
- a holder on this host whose process is gone (or whose pid now belongs to another
  process, or to this one), or an unreadable lock: stale, take it over with a warning
  naming the old holder;
- anything else (a live process on this host, or a process on another host, which cannot
  be checked from here): refuse with :class:`~contrastive.errors.RunDirectoryInUse`, which
  names the holder and what to do.

A restart of the same job is taken over only when its old process cannot still be alive
here: the same SLURM job with a live process on this host is two runs of one allocation,
and is refused.

The file is named ``run.lock`` and not ``.lock`` so that ``ls`` shows it: the refusal
tells the user to delete it when its job is gone. It appears atomically (written to a
temporary file, then hard-linked into place, which fails if a lock exists: the classic
lock that also holds on NFS), so no reader ever sees half a record. A take-over first
moves the stale file aside and checks it moved the very record it judged, so two jobs
that find one stale lock at once cannot both take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from contrastive.errors import RunDirectoryInUse

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
ATTEMPTS = 5  # take-overs lost to another job before giving up


def is_global_zero(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is the job's global rank zero, from the variables launchers set
    before any process group exists (as Lightning's ``_get_rank``: ``RANK``, then
    ``LOCAL_RANK``, ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``), and, without ``RANK``, on
    node zero (``NODE_RANK``, which Lightning's own launcher uses on other nodes).

    Examples:
        >>> is_global_zero({}), is_global_zero({"LOCAL_RANK": "1"})
        (True, False)
        >>> is_global_zero({"RANK": "0", "NODE_RANK": "0"}), is_global_zero({"NODE_RANK": "1"})
        (True, False)
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if environ.get(key):
            if int(environ[key]) != 0:
                return False
            break
    return "RANK" in environ or int(environ.get("NODE_RANK") or 0) == 0


def slurm_job(environ: Mapping[str, str] = os.environ) -> str | None:
    """The SLURM job as requeues keep it: ``<array job>_<task>`` for an array task, else
    ``SLURM_JOB_ID``; ``None`` outside SLURM."""
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID") or None


def elastic_run(environ: Mapping[str, str] = os.environ) -> str | None:
    """torchrun's ``TORCHELASTIC_RUN_ID``; ``None`` outside torchrun and for its default
    ``none`` (``--rdzv-id`` not given), which every such run shares."""
    run_id = environ.get("TORCHELASTIC_RUN_ID")
    return run_id if run_id and run_id != "none" else None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), to tell a
    process from a later one given the same pid; ``None`` where ``/proc`` cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` (started at ``started``, when known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    now = process_start(pid)
    return started is None or now is None or now == started


@dataclass(frozen=True)
class Holder:
    """The record in a lock file."""

    pid: int
    host: str
    started: str
    process_start: int | None = None
    slurm_job: str | None = None
    torchelastic_run_id: str | None = None
    command: str | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def this_process(cls, environ: Mapping[str, str] = os.environ) -> Holder:
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            process_start=process_start(os.getpid()),
            slurm_job=slurm_job(environ),
            torchelastic_run_id=elastic_run(environ),
            command=" ".join(sys.argv)[:1000],
        )

    @classmethod
    def parse(cls, text: bytes) -> Holder:
        """The record in ``text``; ``ValueError`` (or ``TypeError``) if it is not one."""
        record: Any = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        holder = cls(**known)
        if not isinstance(holder.pid, int) or not isinstance(holder.host, str):
            raise ValueError("no pid or host")
        return holder

    def describe(self) -> str:
        jobs = [f"SLURM job {self.slurm_job}"] if self.slurm_job else []
        jobs += [f"torchrun run {self.torchelastic_run_id}"] if self.torchelastic_run_id else []
        where = f"pid {self.pid} on host {self.host}"
        return where + (f" ({', '.join(jobs)})" if jobs else "") + f", since {self.started}"


@dataclass
class Lock:
    """A held lock; :meth:`release` removes the file if this process still holds it."""

    path: Path
    holder: Holder

    def release(self) -> None:
        with contextlib.suppress(OSError, ValueError, TypeError):
            if Holder.parse(self.path.read_bytes()).token == self.holder.token:
                self.path.unlink()


def _create(path: Path, holder: Holder) -> bool:
    """Write ``holder`` to ``path`` whole, unless a lock is there (``False``)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{holder.token[:8]}.tmp")
    data = json.dumps(asdict(holder), indent=2).encode()
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create instead
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        return True
    finally:
        temporary.unlink(missing_ok=True)


def _remove_if_unchanged(path: Path, seen: bytes, holder: Holder) -> None:
    """Remove the lock at ``path`` if it still holds ``seen``: it is moved aside first, and
    put back if a job wrote a new lock since it was read."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{holder.token[:8]}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another job removed it first
    try:
        if aside.read_bytes() != seen:  # a fresh lock: give it back, unless one replaced it
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def _judge(found: Holder | None, error: str, me: Holder) -> tuple[bool, str]:
    """Whether ``me`` may take over from ``found`` (``None``: unreadable because of
    ``error``), and why."""
    if found is None:
        return True, f"its lock file is unreadable ({error})"
    here = found.host == me.host
    gone = here and (found.pid == me.pid or not alive(found.pid, found.process_start))
    same_job = (found.slurm_job is not None and found.slurm_job == me.slurm_job) or (
        found.torchelastic_run_id is not None
        and found.torchelastic_run_id == me.torchelastic_run_id
    )
    if same_job and (not here or gone):
        return True, "a restart of the same job"
    if gone:
        return True, "its pid is this process's" if found.pid == me.pid else "its process is gone"
    return False, (
        "its process is alive" if here else "it runs on another host, where it cannot be checked"
    )


def acquire(run_dir: str | Path, environ: Mapping[str, str] = os.environ) -> Lock:
    """Take ``<run_dir>/run.lock`` for this process, by the rules in the module docstring;
    :class:`~contrastive.errors.RunDirectoryInUse` if another job holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = Holder.this_process(environ)
    for _ in range(ATTEMPTS):
        if _create(path, me):
            return Lock(path, me)
        try:
            seen = path.read_bytes()
        except FileNotFoundError:
            continue  # released meanwhile
        except OSError as problem:  # there, but not ours to read: cannot judge it
            raise RunDirectoryInUse(run_dir, path, "an unknown job", str(problem)) from None
        found: Holder | None = None
        error = ""
        try:
            found = Holder.parse(seen)
        except (ValueError, TypeError) as problem:
            error = str(problem)
        take_over, reason = _judge(found, error, me)
        if not take_over:
            assert found is not None
            raise RunDirectoryInUse(run_dir, path, found.describe(), reason)
        held_by = found.describe() if found else "an unknown job"
        if reason == "a restart of the same job":
            log.info("Taking over %s from %s: %s", path, held_by, reason)
        else:
            log.warning("Taking over the stale lock %s from %s: %s", path, held_by, reason)
        _remove_if_unchanged(path, seen, me)
    raise RunDirectoryInUse(run_dir, path, "jobs racing for it", f"{ATTEMPTS} take-overs lost")
