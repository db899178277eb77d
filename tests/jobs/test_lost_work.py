"""No lost work on the default job (Fashion-MNIST, default callbacks, W&B offline), with
epochs cut short by ``trainer.limit_train_batches`` as the README shows: a kill without
warning, a stop on the last step of a cut epoch, submitit's warning signal, and a disk that
fills up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.jobs import ROOT
from tests.helpers.markers import needs_fashion_mnist
from tests.helpers.resume import (
    assert_resumes_exactly,
    assert_same_training,
    disk_fault_at,
    finished_run,
    pretrain_process,
    signal_at,
)

pytestmark = needs_fashion_mnist

# The default pretraining job, two epochs cut to 12 steps each (of 234), two batches of
# each validation loader: 24 steps.
DEFAULT_JOB = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=12",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
STEPS = 24


def last_step(run_dir: Path) -> int:
    return int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("default-straight") / "run", DEFAULT_JOB)


@pytest.mark.slow  # CI time (over 20 s); make test-all runs it
def test_sigkill_keeps_the_epoch_end_checkpoint_and_resumes_exactly(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """SIGKILL runs no handler: what survives is what was already on disk."""
    run_dir = tmp_path / "run"
    killed = pretrain_process(run_dir, *signal_at(17, "SIGKILL"), job=DEFAULT_JOB)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert last_step(run_dir) == 12  # the first epoch's end: steps 13-17 are lost
    assert_resumes_exactly(uninterrupted, run_dir, job=DEFAULT_JOB, steps=STEPS)


@pytest.mark.parametrize(
    "sent_after",
    [
        12,  # sent after the cut epoch's last step: noticed at the epoch's end
        pytest.param(11, marks=pytest.mark.slow),  # noticed after step 12: waits for the end
    ],
)
def test_sigterm_on_the_last_step_of_a_cut_epoch_resumes_exactly(
    uninterrupted: Path, tmp_path: Path, sent_after: int
) -> None:
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(sent_after), job=DEFAULT_JOB)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM after step 12" in stopped.stderr
    assert_resumes_exactly(uninterrupted, run_dir, job=DEFAULT_JOB, steps=STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"])
def test_each_stop_signal_mid_epoch_resumes_exactly(
    uninterrupted: Path, tmp_path: Path, name: str
) -> None:
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(16, name), job=DEFAULT_JOB)
    assert stopped.returncode == 128 + signal.Signals[name], stopped.stderr[-3000:]
    assert f"stopped by {name} after step 17" in stopped.stderr
    assert last_step(run_dir) == 17
    assert_resumes_exactly(uninterrupted, run_dir, job=DEFAULT_JOB, steps=STEPS)


# The same job cut to one epoch of four steps, last.ckpt every two: a short run whose second
# save is its last.
SHORT_JOB = [
    *DEFAULT_JOB,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "callbacks.last_checkpoint.train_time_interval=null",
    "callbacks.last_checkpoint.every_n_train_steps=2",
]


def assert_stopped_by_a_full_disk(result: subprocess.CompletedProcess[str], run_dir: Path) -> None:
    """Exit 2 and one message naming last.ckpt, its directory and the free space there,
    with no traceback; last.ckpt whole, no temporary beside it, no backbone.pt."""
    assert result.returncode == 2, result.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(
        f"error: cannot write {checkpoints / 'last.ckpt'}: No space left on device (ENOSPC); "
        f"{checkpoints} has "
    )
    assert " free of " in errors[0] and "The previous last.ckpt is intact." in errors[0]
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert not (run_dir / "backbone.pt").exists()


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_resumes(tmp_path: Path) -> None:
    """The disk fills up after step 2's last.ckpt: step 4's save fails half-written. The
    job stops with one message, step 2's checkpoint is whole, and the same command, once
    there is room, resumes from it and finishes."""
    run_dir = tmp_path / "run"
    full = pretrain_process(run_dir, *disk_fault_at(3, "last.ckpt"), job=SHORT_JOB)
    assert_stopped_by_a_full_disk(full, run_dir)
    assert last_step(run_dir) == 2
    resumed = pretrain_process(run_dir, job=SHORT_JOB)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}"
        in (run_dir / "pretrain.log").read_text()
    )
    assert last_step(run_dir) == 4
    assert (run_dir / "backbone.pt").is_file() and (run_dir / "metrics.json").is_file()


@pytest.mark.slow
def test_a_full_disk_at_an_epoch_end_checkpoint_resumes_exactly(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """The same on the two-epoch job: the second epoch's save fails, the first epoch's
    last.ckpt is whole, and the rerun ends exactly as the uninterrupted run does."""
    run_dir = tmp_path / "run"
    full = pretrain_process(run_dir, *disk_fault_at(13, "last.ckpt"), job=DEFAULT_JOB)
    assert_stopped_by_a_full_disk(full, run_dir)
    assert last_step(run_dir) == 12
    assert_resumes_exactly(uninterrupted, run_dir, job=DEFAULT_JOB, steps=STEPS)


@pytest.mark.slow  # CI time (over 20 s); make test-all runs it
def test_submitit_warning_signal_checkpoints_requeues_and_resumes_exactly(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """A real SIGUSR2 in a job of Hydra's submitit-local launcher: the step finishes,
    last.ckpt is written, submitit's own handler requeues the job (exit 144 to its local
    executor), and the requeued job resumes from the checkpoint and ends exactly as the
    uninterrupted run does."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "pretrain.py"),
        "--multirun",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=30",  # not near its limit: a preemption
        f"hydra.sweep.dir={sweep}",
        *DEFAULT_JOB,
        *signal_at(5, "SIGUSR2"),
        f"+callbacks.signal.marker={tmp_path / 'signalled'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("SUBMITIT_PREEMPT_SIGNAL", None)
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    logs = "\n".join(p.read_text() for p in sorted((sweep / ".submitit").rglob("*_log.*")))
    assert result.returncode == 0, result.stderr[-2000:] + logs[-3000:]
    assert "stopped by SIGUSR2 after step 6" in logs
    assert "handing SIGUSR2 on to the job's own handler (SignalHandler.checkpoint_and_try" in logs
    assert "Requeued job" in logs  # submitit's own words: one requeue, by submitit
    job_log = (sweep / "0" / "pretrain.log").read_text()
    assert "resuming from" in job_log and "last.ckpt" in job_log
    assert_same_training(uninterrupted, sweep / "0", STEPS)
