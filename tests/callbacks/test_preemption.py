"""The Preemption callback: a stop signal lets the step finish, writes last.ckpt and exits
with 128 + the signal; SIGUSR1 requeues the SLURM job, or a handler of the job's own is
called instead; one rank's signal stops every DDP rank. (That the rerun then ends exactly as
an uninterrupted run does: tests/jobs/test_resume.py.)"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from tests.helpers.resume import pretrain_process, signal_at


def test_sigusr2_checkpoints_at_the_step_and_exits_140(tmp_path: Path) -> None:
    """submitit's warning signal, in a process without submitit's handler."""
    run_dir = tmp_path / "run"
    result = pretrain_process(run_dir, *signal_at(5, "SIGUSR2"), "trainer.max_epochs=1")
    assert result.returncode == 128 + signal.SIGUSR2, result.stderr[-3000:]
    assert "stopped by SIGUSR2 after step 6" in result.stderr
    assert "rerun the same command" in result.stderr and "Traceback" not in result.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_second_ctrl_c_stops_at_once() -> None:
    from contrastive.callbacks import Preemption

    preemption = Preemption()
    preemption._handle(signal.SIGINT, None)
    assert preemption.received == signal.SIGINT  # the first: finish the step
    with pytest.raises(KeyboardInterrupt):
        preemption._handle(signal.SIGINT, None)
    with pytest.raises(ValueError, match=r"unknown signal\(s\) \['SIGKILL'\]; choose from"):
        Preemption(signals=["SIGTERM", "SIGKILL"])


def fake_scontrol(directory: Path) -> dict[str, str]:
    """A ``scontrol`` on PATH that records its arguments (the requeue command mocked)."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {directory / "calls.txt"}\n')
    script.chmod(0o755)
    return {"PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


def test_sigusr1_checkpoints_and_requeues_the_slurm_job(tmp_path: Path) -> None:
    env = {**fake_scontrol(tmp_path / "bin"), "SLURM_JOB_ID": "4242"}
    run_dir = tmp_path / "run"
    result = pretrain_process(run_dir, *signal_at(5, "SIGUSR1"), "trainer.max_epochs=1", env=env)
    assert result.returncode == 128 + signal.SIGUSR1, result.stderr[-3000:]
    assert "stopped by SIGUSR1 after step 6" in result.stderr
    assert "requeued SLURM job 4242" in result.stderr
    assert (tmp_path / "bin" / "calls.txt").read_text().split() == ["requeue", "4242"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_handler_of_the_jobs_own_is_called_after_the_checkpoint_instead_of_a_requeue(
    tmp_path: Path,
) -> None:
    """Under submitit the process has its own handler for the warning signal (which
    requeues): after the checkpoint it is called once, and scontrol is not run."""
    env = {**fake_scontrol(tmp_path / "bin"), "SLURM_JOB_ID": "4242"}
    calls = tmp_path / "handler.txt"
    own = [
        "+callbacks.own._target_=tests.helpers.faults.HandlerOfItsOwn",
        "+callbacks.own.signal_name=SIGUSR1",
        f"+callbacks.own.path={calls}",
    ]
    run_dir = tmp_path / "run"
    result = pretrain_process(
        run_dir, *own, *signal_at(5, "SIGUSR1"), "trainer.max_epochs=1", env=env
    )
    assert result.returncode == 128 + signal.SIGUSR1, result.stderr[-3000:]
    assert (
        "after step 6" in result.stderr and "handing SIGUSR1 on to the job's own" in result.stderr
    )
    assert calls.read_text().split() == [str(int(signal.SIGUSR1))]
    assert not (tmp_path / "bin" / "calls.txt").exists()  # no second requeue
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_requeue_names_array_tasks_and_plain_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastive.callbacks.preemption import requeue_slurm_job, slurm_job_id

    for key, value in fake_scontrol(tmp_path).items():
        monkeypatch.setenv(key, value)
    array = {"SLURM_JOB_ID": "101", "SLURM_ARRAY_JOB_ID": "100", "SLURM_ARRAY_TASK_ID": "7"}
    assert slurm_job_id(array) == "100_7"
    assert slurm_job_id({"SLURM_JOB_ID": "555"}) == "555"
    assert slurm_job_id({}) is None
    with pytest.raises(ValueError, match="unexpected SLURM job id"):
        slurm_job_id({"SLURM_JOB_ID": "1; rm -rf /"})
    assert requeue_slurm_job("100_7") and requeue_slurm_job("555")
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["requeue 100_7", "requeue 555"]


@pytest.mark.ddp
@pytest.mark.slow  # CI time (over 20 s); make test-all runs it
def test_a_signal_to_one_ddp_rank_stops_both_with_one_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.num_workers=0"]
    result = pretrain_process(run_dir, *ddp, *signal_at(3, "SIGTERM", rank=1))
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "stopped by SIGTERM after step 4" in result.stderr
    checkpoints = sorted(p.name for p in run_dir.rglob("*.ckpt"))
    assert checkpoints == ["last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
