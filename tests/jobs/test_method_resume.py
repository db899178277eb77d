"""The methods with state beyond their weights resume exactly: MoCo v2 (momentum encoder and
queue) and NNCLR (support set), stopped by SIGTERM mid-epoch and rerun with the same
command, end bit for bit as the uninterrupted run, in weights, momentum encoder and queue
(all in ``state_dict``). The negative control resumes with the queue dropped, as a
non-persistent buffer would be, and must differ. Then two gloo ranks under DDP hold one
global queue after every step, filled with the keys of both."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from tests.helpers.resume import (
    DDP,
    JOB,
    assert_resumes_exactly,
    differences,
    finished_run,
    pretrain_process,
    signal_at,
    training_state,
)

# 2 epochs of 16 steps; MoCo v2 writes 128 keys a step (2 views x 64), NNCLR 64: both rings
# wrap before the stop at step 21.
METHODS = {
    "moco_v2": [*JOB, "method=moco_v2", "method.queue_length=512"],
    "nnclr": [*JOB, "method=nnclr", "method.queue_length=256"],
}


class DropQueue(pl.Callback):
    """The negative control's defect: the resumed run starts with an empty queue."""

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:  # (after the weights and buffers are loaded)
        for buffer in pl_module.queue.buffers():
            buffer.zero_()


class RecordQueue(pl.Callback):
    """Each rank's queue after each step, saved to ``<dir>/queue_rank<r>.pt``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.queues: list[tuple[torch.Tensor, int]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.queues.append((pl_module.queue.queue.clone(), int(pl_module.queue.filled)))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.save(self.queues, self.directory / f"queue_rank{trainer.global_rank}.pt")


@pytest.fixture(
    scope="module",
    params=["moco_v2", pytest.param("nnclr", marks=pytest.mark.slow)],  # CI time: NNCLR slow
)
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[str], Path, Path]:
    """The uninterrupted run and one stopped by SIGTERM after step 20 (of 32)."""
    job = METHODS[request.param]
    straight = finished_run(tmp_path_factory.mktemp("straight") / "run", job=job)
    stopped = tmp_path_factory.mktemp("stopped") / "run"
    result = pretrain_process(stopped, *signal_at(20), job=job)
    assert result.returncode == 143, result.stderr[-3000:]
    return job, straight, stopped


def test_a_resumed_run_ends_bit_identical_with_its_queue_and_momentum_encoder(
    runs: tuple[list[str], Path, Path], tmp_path: Path
) -> None:
    job, straight, stopped = runs
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    assert_resumes_exactly(straight, run_dir, job=job)
    state = training_state(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert int(state["queue.filled"]) == int(state["queue.queue"].shape[0])  # full, wrapped


def test_negative_control_a_resume_without_the_queue_differs(
    runs: tuple[list[str], Path, Path], tmp_path: Path
) -> None:
    job, straight, stopped = runs
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    drop = ["+callbacks.drop._target_=tests.jobs.test_method_resume.DropQueue"]
    result = pretrain_process(run_dir, *drop, job=job)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = training_state(straight / "checkpoints" / "last.ckpt")
    resumed = training_state(run_dir / "checkpoints" / "last.ckpt")
    found = differences(expected, resumed)
    assert ".state_dict.queue.queue" in found and ".state_dict.backbone.features.0.weight" in found


@pytest.mark.ddp
def test_two_ranks_hold_the_same_global_queue_after_every_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    record = [
        "+callbacks.record._target_=tests.jobs.test_method_resume.RecordQueue",
        f"+callbacks.record.directory={tmp_path}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=6",
    ]
    result = pretrain_process(run_dir, *DDP, *record, job=METHODS["moco_v2"])
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"queue_rank{r}.pt") for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6
    for step, ((queue_0, filled_0), (queue_1, filled_1)) in enumerate(zip(*ranks, strict=True)):
        assert torch.equal(queue_0, queue_1), f"the ranks' queues differ after step {step}"
        # each step writes 2 views x 64 images (data.batch_size is per process) of each rank
        assert filled_0 == filled_1 == min(512, (step + 1) * 2 * 64 * 2)
