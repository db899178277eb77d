"""Faults of data-parallel jobs, injected into real gloo process groups on the CPU: a rank
killed without warning (SIGKILL) under torchrun's elastic restart and under Lightning's
own launcher, a DataLoader worker killed as the OOM killer would, and a resume on another
number of processes."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from tests.helpers.faults import samples_by_step
from tests.helpers.markers import needs_fashion_mnist
from tests.helpers.resume import (
    DDP,
    JOB,
    assert_resumes_exactly,
    assert_same_training,
    finished_run,
    pretrain_process,
    signal_at,
    torchrun,
)

pytestmark = pytest.mark.ddp

# A save every 5 steps, so a kill loses at most the steps since the last multiple of 5.
EVERY_5 = [
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "callbacks.last_checkpoint.train_time_interval=null",
]
# The synthetic job on 2 ranks of 32 (a global batch of 64, 16 steps an epoch, 32 steps),
# no loader workers (2 processes already share the 2 cores).
SYNTHETIC_2 = [*JOB, *DDP, "data.batch_size=32", "data.num_workers=0", *EVERY_5]
# The default Fashion-MNIST job on 2 ranks, two epochs cut to 6 steps: 12 steps.
FASHION_2 = [
    *DDP,
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data.batch_size=128",
    *EVERY_5,
]


def killed_and_restarted(run_dir: Path, job: list[str], step: int) -> Any:
    """``job`` under torchrun with one restart allowed; rank 1 SIGKILLs itself after
    ``step`` once (not again in the restarted group)."""
    marker = run_dir.parent / "killed"
    kill = signal_at(step, "SIGKILL", rank=1, marker=marker)
    result = pretrain_process(run_dir, *kill, job=job, launcher=torchrun(2, max_restarts=1))
    assert marker.exists()  # the kill happened
    return result


@pytest.mark.parametrize(
    ("job", "kill_after", "steps"),
    [
        pytest.param(FASHION_2, 7, 12, id="fashion_mnist", marks=needs_fashion_mnist),
        pytest.param(SYNTHETIC_2, 23, 32, id="synthetic", marks=pytest.mark.slow),
    ],
)
def test_torchrun_restarts_the_job_after_a_rank_is_killed_and_ends_exactly(
    tmp_path: Path, job: list[str], kill_after: int, steps: int
) -> None:
    straight = finished_run(tmp_path / "straight" / "run", job, launcher=torchrun(2))
    run_dir = tmp_path / "restarted" / "run"
    result = killed_and_restarted(run_dir, job, step=kill_after)
    assert result.returncode == 0, result.stderr[-3000:]
    # The survivor's one message, then torchrun's restart from the last 5-step checkpoint.
    assert "rank 0 stopped: lost rank 1 (pid" in result.stderr
    assert "Under torchrun, the group restarts from the newest checkpoint" in result.stderr
    assert "torchrun attempt 1" in result.stdout
    assert "resuming from" in result.stdout
    assert_same_training(straight, run_dir, steps=steps)


@pytest.mark.slow
def test_negative_control_a_restart_without_per_rank_rng_states_diverges(
    tmp_path: Path,
) -> None:
    """The restart is exact because each rank gets its own view generator back; with
    rank 0's state given to both (as a checkpoint of rank 0's state alone would), the
    restarted run ends with different weights."""
    straight = finished_run(tmp_path / "straight" / "run", SYNTHETIC_2, launcher=torchrun(2))
    run_dir = tmp_path / "restarted" / "run"
    blind = ["+callbacks.blind._target_=tests.jobs.test_distributed_faults.RankZeroViewsOnly"]
    result = killed_and_restarted(run_dir, [*SYNTHETIC_2, *blind], step=23)
    assert result.returncode == 0, result.stderr[-3000:]
    with pytest.raises(AssertionError):
        assert_same_training(straight, run_dir, steps=32)


class RankZeroViewsOnly(pl.Callback):
    """Every rank resumes rank 0's view generator (the negative control's defect)."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # (after the module's own hook, which Lightning calls first)
        pl_module.view_stream._state = checkpoint["contrastive"]["view_generators"][0]


def test_a_lost_rank_0_under_lightnings_launcher_stops_rank_1_with_one_message(
    tmp_path: Path,
) -> None:
    """Nothing restarts a group that Lightning's launcher started: rank 0 (the launching
    process) is SIGKILLed, and the orphaned rank 1 exits on its own within the 60 s
    process-group timeout, naming the rank it lost."""
    run_dir = tmp_path / "run"
    marker = tmp_path / "killed"
    kill = signal_at(7, "SIGKILL", rank=0, marker=marker)
    result = pretrain_process(run_dir, *kill, job=SYNTHETIC_2)
    ended = time.time()  # the pipes close when rank 1, the last holder, exits
    assert result.returncode == -signal.SIGKILL
    assert ended - marker.stat().st_mtime < 60
    assert "error: rank 1 stopped: lost rank 0 (pid" in result.stderr, result.stderr[-3000:]
    assert "its process is gone" in result.stderr
    assert "Traceback" not in result.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5


@pytest.mark.slow
def test_a_lost_rank_1_under_lightnings_launcher_stops_rank_0_naming_it(tmp_path: Path) -> None:
    """Rank 1 is SIGKILLed: rank 0 (Lightning's launcher) stops within seconds, naming
    it: in its own message when its collective fails first, else in Lightning's when its
    child watcher (every 5 s) sees the child die and SIGKILLs the group."""
    run_dir = tmp_path / "run"
    marker = tmp_path / "killed"
    kill = signal_at(7, "SIGKILL", rank=1, marker=marker)
    result = pretrain_process(run_dir, *kill, job=SYNTHETIC_2)
    assert time.time() - marker.stat().st_mtime < 60
    assert result.returncode in (1, -signal.SIGKILL), result.stderr[-3000:]
    ours = "error: rank 0 stopped: lost rank 1 (pid" in result.stderr
    lightnings = "[rank: 1] Child process with PID" in result.stdout + result.stderr
    assert ours or lightnings, result.stderr[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5


class KillLoaderWorker(pl.Callback):
    """After ``step``, once, SIGKILL one of this process's DataLoader workers, as the
    kernel's OOM killer would."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step or os.path.exists(self.marker):
            return
        workers = multiprocessing.active_children()
        assert workers, "the job has no DataLoader workers"
        open(self.marker, "w").close()
        os.kill(workers[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        time.sleep(2)  # the loader notices at its next fetch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("straight") / "run", [*JOB, *EVERY_5])


def test_a_killed_loader_worker_gives_one_message_and_the_rerun_resumes_exactly(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    kill = [
        "+callbacks.oom._target_=tests.jobs.test_distributed_faults.KillLoaderWorker",
        "+callbacks.oom.step=18",
        f"+callbacks.oom.marker={tmp_path / 'killed'}",
    ]
    stopped = pretrain_process(run_dir, *kill, job=[*JOB, *EVERY_5])
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    message = [line for line in stopped.stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1, stopped.stderr[-3000:]
    assert "DataLoader worker (pid" in message[0] and "out-of-memory killer" in message[0]
    assert "available now" in message[0] and "data.num_workers (now 2)" in message[0]
    assert "Traceback" not in stopped.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] in (15, 16)  # the last save before step 18
    assert_resumes_exactly(uninterrupted, run_dir, *kill, job=[*JOB, *EVERY_5])


# --- another number of processes ---------------------------------------------------------

RECORD = "+callbacks.record._target_=tests.helpers.faults.RecordSamples"
ONE = [*JOB, "data.num_workers=0"]  # one process of 64 (16 steps an epoch, 32 steps)
TWO = [*JOB, "data.num_workers=0", *DDP, "data.batch_size=32"]  # two of 32


def record(folder: Path) -> list[str]:
    return [RECORD, f"+callbacks.record.folder={folder}"]


@pytest.fixture(scope="module")
def one_process_order(tmp_path_factory: pytest.TempPathFactory) -> dict[int, set[int]]:
    """The samples of each step of the uninterrupted one-process run."""
    folder = tmp_path_factory.mktemp("order")
    finished_run(folder / "run", [*ONE, *record(folder / "samples")])
    order = samples_by_step(str(folder / "samples"), steps_per_epoch=16)
    assert sorted(order) == list(range(32)) and {len(s) for s in order.values()} == {64}
    return order


@pytest.mark.slow  # the rescaling and its refusal are unit-tested in tests/jobs/test_pretrain.py
def test_a_resume_from_2_processes_on_1_keeps_the_global_batch_and_order(
    one_process_order: dict[int, set[int]], tmp_path: Path
) -> None:
    run_dir, samples = tmp_path / "run", tmp_path / "samples"
    stopped = pretrain_process(run_dir, *signal_at(20, rank=0), *record(samples), job=TWO)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    shutil.copytree(run_dir, tmp_path / "copy")

    # The same command on one process: data.batch_size=32 is rescaled to 64.
    resumed = pretrain_process(run_dir, *record(samples), job=[*ONE, "data.batch_size=32"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        "resuming on 1 process(es) a run checkpointed on 2: data.batch_size 32 -> 64 per "
        "process, keeping its global batch of 64 and its sample order" in resumed.stdout
    )
    assert samples_by_step(str(samples), steps_per_epoch=16) == one_process_order
    assert (
        torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 32
    )

    # 64 images a step cannot be shared by 3 processes: refused before any work.
    before = (tmp_path / "copy" / "checkpoints" / "last.ckpt").read_bytes()
    refused = pretrain_process(tmp_path / "copy", job=[*TWO, "trainer.devices=3"])
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (
        "error: the checkpoint was written by 2 process(es) with data.batch_size=32 (a global "
        "batch of 64), which 3 process(es) cannot share evenly" in refused.stderr
    )
    assert (tmp_path / "copy" / "checkpoints" / "last.ckpt").read_bytes() == before


@pytest.mark.slow
def test_a_resume_from_1_process_on_2_keeps_the_global_batch_and_order(
    one_process_order: dict[int, set[int]], tmp_path: Path
) -> None:
    run_dir, samples = tmp_path / "run", tmp_path / "samples"
    stopped = pretrain_process(run_dir, *signal_at(20), *record(samples), job=ONE)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    resumed = pretrain_process(run_dir, *record(samples), job=[*ONE, *DDP])  # 64 per rank
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "data.batch_size 64 -> 32 per process, keeping its global batch of 64" in (
        resumed.stdout
    )
    assert samples_by_step(str(samples), steps_per_epoch=16) == one_process_order


class BlindToTheWorldSize(pl.Callback):
    """Undo the resume's rescaling: the per-process batch stays as configured (the
    negative control's defect)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        trainer.datamodule.batch_size = self.batch_size  # type: ignore[attr-defined]


@pytest.mark.slow
def test_negative_control_a_resume_blind_to_the_world_size_changes_the_order(
    one_process_order: dict[int, set[int]], tmp_path: Path
) -> None:
    run_dir, samples = tmp_path / "run", tmp_path / "samples"
    stopped = pretrain_process(run_dir, *signal_at(20, rank=0), *record(samples), job=TWO)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    blind = [
        "+callbacks.blind._target_=tests.jobs.test_distributed_faults.BlindToTheWorldSize",
        "+callbacks.blind.batch_size=32",
    ]
    resumed = pretrain_process(run_dir, *record(samples), *blind, job=[*ONE, "data.batch_size=32"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert samples_by_step(str(samples), steps_per_epoch=16) != one_process_order
