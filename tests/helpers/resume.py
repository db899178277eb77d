"""The stop-and-resume harness: a small pretraining job run by ``scripts/pretrain.py`` in a
fresh process (as a user or a scheduler starts it), a real signal at a chosen step, and the
training states of two run directories compared bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tests.helpers.jobs import ROOT

# 1024 synthetic 28x28 images in batches of 64: 16 steps an epoch, shuffled, 2 workers,
# random crops / flips / jitter made on the device from the view generator.
JOB = [
    "data=synthetic",
    "data.source.image_size=28",
    "data.source.channels=1",
    "data.source.num_samples=1024",
    "data.batch_size=64",
    "data.num_workers=2",
    "backbone.widths=[8,16]",
    "trainer.max_epochs=2",
    "~callbacks.media",
    "~callbacks.health",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
# The same with the default W&B logger (offline) and no loader workers.
WANDB_JOB = [o for o in JOB if o != "logger=none"] + ["data.num_workers=0"]


def signal_at(
    step: int,
    name: str = "SIGTERM",
    rank: int | None = None,
    during: str = "train",
    group: bool = False,
    marker: Path | None = None,
) -> list[str]:
    """Overrides that add :class:`tests.helpers.faults.SignalAtStep` to a job (``marker``:
    sent once, not again in a restarted or requeued job)."""
    overrides = [
        "+callbacks.signal._target_=tests.helpers.faults.SignalAtStep",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signal_name={name}",
        f"+callbacks.signal.rank={'null' if rank is None else rank}",
        f"+callbacks.signal.during={during}",
        f"+callbacks.signal.group={str(group).lower()}",
    ]
    return overrides + ([f"+callbacks.signal.marker={marker}"] if marker else [])


# Two CPU processes under Lightning's own launcher (it starts rank 1 itself).
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(processes: int = 2, max_restarts: int = 0) -> list[str]:
    """``torchrun`` on this host (static rendezvous on a free port), as a ``launcher``."""
    return [
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        f"--nproc_per_node={processes}",
        f"--max-restarts={max_restarts}",
        f"--master-port={free_port()}",
    ]


def disk_fault_at(step: int, name: str, error: str = "ENOSPC", stage: str = "write") -> list[str]:
    """Overrides that add :class:`tests.helpers.faults.DiskFaultAtStep` to a job."""
    return [
        "+callbacks.disk._target_=tests.helpers.faults.DiskFaultAtStep",
        f"+callbacks.disk.step={step}",
        f"+callbacks.disk.name={name}",
        f"+callbacks.disk.error={error}",
        f"+callbacks.disk.stage={stage}",
    ]


def pretrain_process(
    run_dir: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    job: Sequence[str] = JOB,
    launcher: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``scripts/pretrain.py`` with ``job`` and ``overrides`` in a fresh process, as a user
    or a scheduler starts it (``launcher``: interpreter arguments before the script, such
    as :func:`torchrun`'s)."""
    command = [sys.executable, *launcher, str(ROOT / "scripts" / "pretrain.py")]
    command += [*job, *overrides, f"hydra.run.dir={run_dir}"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command,
        cwd=run_dir.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=280,
        start_new_session=True,  # its own process group, for signals sent to the group
    )


def training_state(path: Path) -> dict[str, Any]:
    """What must match bit for bit: weights, optimiser and schedule state, counters, the
    online probe (head and optimiser)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    probe = next(v for k, v in checkpoint["callbacks"].items() if "OnlineLinearProbe" in k)
    return {
        "state_dict": checkpoint["state_dict"],
        "optimizer_states": checkpoint["optimizer_states"],
        "lr_schedulers": checkpoint["lr_schedulers"],
        "global_step": checkpoint["global_step"],
        "epoch": checkpoint["epoch"],
        "online_probe": probe,
    }


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two nested states differ (tensors compared exactly, atol = 0)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} length"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [where]


def finished_run(run_dir: Path, job: Sequence[str] = JOB, launcher: Sequence[str] = ()) -> Path:
    """``run_dir`` after ``job`` ran there uninterrupted."""
    result = pretrain_process(run_dir, job=job, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def assert_resumes_exactly(
    uninterrupted: Path,
    run_dir: Path,
    *overrides: str,
    job: Sequence[str] = JOB,
    steps: int = 32,
) -> subprocess.CompletedProcess[str]:
    """Rerun the stopped job in ``run_dir`` (the same command; ``resume=auto`` is the
    default) and check that it ends as the ``uninterrupted`` run did, bit for bit."""
    result = pretrain_process(run_dir, *overrides, job=job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_training(uninterrupted, run_dir, steps)
    return result


def assert_same_training(uninterrupted: Path, run_dir: Path, steps: int) -> None:
    """Both run directories end with the same training state and ``backbone.pt``."""
    expected = training_state(uninterrupted / "checkpoints" / "last.ckpt")
    resumed = training_state(run_dir / "checkpoints" / "last.ckpt")
    assert expected["global_step"] == steps
    assert differences(expected, resumed) == []
    backbone = torch.load(uninterrupted / "backbone.pt", weights_only=True)["state_dict"]
    assert (
        differences(backbone, torch.load(run_dir / "backbone.pt", weights_only=True)["state_dict"])
        == []
    )
