"""One message, not a traceback, for the faults a job cannot survive by itself: a peer
rank lost from the process group, and a DataLoader worker killed (most often by the
kernel's out-of-memory killer). Each says what happened, what is left on disk, and how to
go on; the CLI prints it and exits with status 1 (``contrastive.cli.run_job``).

What survives either fault is the newest ``last.ckpt`` (written atomically at every epoch
end and every few minutes, see :mod:`contrastive.callbacks.checkpoint`), so the same
command run again resumes from it (``resume=auto``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch.distributed as dist

from contrastive import distributed

_WORKER = re.compile(r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\)")
_WORKER_SIGNAL = re.compile(r"killed by signal: ([\w ]+?)\.")
# How gloo, NCCL and c10d word a broken or silent peer.
_COLLECTIVE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "connectFullMesh",
    "Timed out waiting",
    "timed out",
    "Socket Timeout",
    "NCCL",
    "ProcessGroupGloo",
    "gloo",
)


def _gib(kib: int) -> str:
    return f"{kib / 2**20:.1f} GiB"


def memory_summary() -> str:
    """This machine's memory as the OOM killer sees it: available of total, and the
    cgroup's limit and OOM kills where a cgroup (v2) sets them."""
    parts = []
    try:
        info = {}  # "MemAvailable:  123456 kB" -> {"MemAvailable": 123456}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if value.split() and value.split()[0].isdigit():
                info[key] = int(value.split()[0])
        parts.append(f"{_gib(info['MemAvailable'])} of {_gib(info['MemTotal'])} available now")
    except (OSError, KeyError, ValueError, IndexError):
        pass
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            parts.append(f"cgroup limit {_gib(int(limit) // 1024)}")
        events = dict(line.split() for line in (cgroup / "memory.events").read_text().splitlines())
        if int(events.get("oom_kill", 0)):
            parts.append(f"{events['oom_kill']} OOM kill(s) recorded in this cgroup")
    except (OSError, ValueError):
        pass
    return "; ".join(parts) or "memory figures unavailable"


def _resume_hint(output_dir: str | Path | None) -> str:
    where = f" in {Path(output_dir) / 'checkpoints'}" if output_dir else ""
    return (
        f"the newest last.ckpt{where} is intact: rerun the same command to resume from it "
        "(resume=auto)"
    )


def is_collective_failure(error: BaseException) -> bool:
    """Whether ``error`` is a broken or timed-out collective of a multi-process run."""
    if len(distributed._PEERS) < 2:  # not a data-parallel run
        return False
    if isinstance(error, dist.DistError):
        return True
    return isinstance(error, RuntimeError) and any(k in str(error) for k in _COLLECTIVE)


def describe(
    error: BaseException, output_dir: str | Path | None = None, num_workers: int | None = None
) -> str | None:
    """The message for ``error`` if it is one of this module's faults, else ``None``."""
    text = str(error)
    worker = _WORKER.search(text)
    if isinstance(error, RuntimeError) and worker:
        pids = worker.group(1).strip()
        signal = _WORKER_SIGNAL.search(text)
        how = f"was killed by signal {signal.group(1)}" if signal else "exited unexpectedly"
        workers = "" if num_workers is None else f" (now {num_workers})"
        return (
            f"DataLoader worker (pid {pids}) {how}, most likely by the kernel's "
            f"out-of-memory killer ({memory_summary()}). Each worker holds its own batches "
            f"in flight: lower data.num_workers{workers} or data.batch_size. "
            f"{_resume_hint(output_dir).capitalize()}."
        )
    if not is_collective_failure(error):
        return None
    gone, unknown = distributed.lost_peers()
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first = re.sub(r"^\[[^\]]*\] ", "", first)  # gloo's source location
    first = first.split(". This is typically", 1)[0][:200]  # and its advice
    if gone:
        names = ", ".join(str(p) for p in gone)
        what = f"lost {names}: its process is gone"
    elif unknown:
        names = ", ".join(str(p) for p in unknown)
        what = f"lost contact with the process group (one of {names}, on other hosts, may be gone)"
    else:
        what = "a collective failed while every rank's process is alive (one may be hung)"
    me = next((p.rank for p in distributed._PEERS if p.pid == os.getpid()), distributed.rank())
    if "TORCHELASTIC_RUN_ID" in os.environ:
        then = (
            "under torchrun, the group restarts from the newest checkpoint if --max-restarts allows"
        )
    else:
        then = (
            "nothing restarts a group launched this way (under torchrun --max-restarts=N "
            f"it restarts by itself); {_resume_hint(output_dir)}"
        )
    return f"rank {me} stopped: {what} ({first}). {then[0].upper()}{then[1:]}."
