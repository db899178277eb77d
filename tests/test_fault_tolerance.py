"""Stopping and resuming without losing work: exact resume after SIGTERM, SIGUSR1 and
SLURM requeue, atomic checkpoints, corrupt-checkpoint fallback, NaN handling."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.jobs.pretrain import pretrain
from contrastive.methods import SimCLR
from tests.helpers.jobs import run_job_in, run_script
from tests.helpers.markers import REAL_FASHION_MNIST, needs_fashion_mnist
from tests.helpers.resume import (
    JOB,
    WANDB_JOB,
    assert_resumes_exactly,
    differences,
    finished_run,
    pretrain_process,
    signal_at,
    training_state,
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("straight") / "run")


@pytest.fixture(scope="module")
def interrupted(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Stopped by SIGTERM after step 20 (of 32: the middle of the second epoch)."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    result = pretrain_process(run_dir, *signal_at(20))
    return run_dir, result


def test_sigterm_writes_a_checkpoint_and_exits_143(interrupted: Any) -> None:
    run_dir, result = interrupted
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "stopped by SIGTERM after step 21" in result.stderr
    assert "rerun the same command" in result.stderr
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 21
    assert "view_generator" in checkpoint["contrastive"]
    assert not (run_dir / "backbone.pt").exists()  # the job did not pretend to finish
    assert "Traceback" not in result.stderr


def test_resume_after_sigterm_is_bit_identical(
    uninterrupted: Path, interrupted: Any, tmp_path: Path
) -> None:
    stopped, _ = interrupted
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    assert_resumes_exactly(uninterrupted, run_dir)


def test_resume_after_a_sigterm_at_an_epoch_end_is_bit_identical(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(15))  # noticed on the epoch's last step
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "after step 16" in stopped.stderr
    assert_resumes_exactly(uninterrupted, run_dir)


def test_sigusr2_checkpoints_at_the_step_and_exits_140(tmp_path: Path) -> None:
    """submitit's warning signal, in a process without submitit's handler."""
    run_dir = tmp_path / "run"
    result = pretrain_process(run_dir, *signal_at(5, "SIGUSR2"), "trainer.max_epochs=1")
    assert result.returncode == 128 + signal.SIGUSR2, result.stderr[-3000:]
    assert "stopped by SIGUSR2 after step 6" in result.stderr
    assert "rerun the same command" in result.stderr and "Traceback" not in result.stderr
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_ctrl_c_to_the_process_group_checkpoints_and_resumes_exactly(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """SIGINT to the job's whole process group, as a terminal's Ctrl-C sends it, DataLoader
    workers included (two of them): the step finishes, last.ckpt is written, exit 130."""
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(5, "SIGINT", group=True))
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stderr[-3000:]
    assert "stopped by SIGINT after step 6" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert_resumes_exactly(uninterrupted, run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGUSR1", "SIGUSR2"])
def test_the_slurm_and_submitit_signals_resume_exactly(
    uninterrupted: Path, tmp_path: Path, name: str
) -> None:
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(20, name))
    assert stopped.returncode == 128 + signal.Signals[name], stopped.stderr[-3000:]
    assert f"stopped by {name} after step 21" in stopped.stderr
    assert_resumes_exactly(uninterrupted, run_dir)


def test_a_second_ctrl_c_stops_at_once() -> None:
    from contrastive.callbacks import Preemption

    preemption = Preemption()
    preemption._handle(signal.SIGINT, None)
    assert preemption.received == signal.SIGINT  # the first: finish the step
    with pytest.raises(KeyboardInterrupt):
        preemption._handle(signal.SIGINT, None)
    with pytest.raises(ValueError, match=r"unknown signal\(s\) \['SIGKILL'\]; choose from"):
        Preemption(signals=["SIGTERM", "SIGKILL"])


def test_timed_checkpoints_replace_each_other_and_survive_sigkill(tmp_path: Path) -> None:
    """train_time_interval=0: a save at every step end, each replacing the last. SIGKILL
    sent in step 9's batch-end hooks, before the checkpoint callback's turn, leaves step
    8's."""
    run_dir = tmp_path / "run"
    every_step = ["callbacks.last_checkpoint.train_time_interval.minutes=0"]
    killed = pretrain_process(run_dir, *every_step, *signal_at(9, "SIGKILL"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8


@pytest.mark.slow
@pytest.mark.parametrize(("killed_after", "saved_at"), [(7, 5), (16, 15), (23, 20)])
def test_sigkill_at_any_step_resumes_exactly_from_the_last_step_checkpoint(
    uninterrupted: Path, tmp_path: Path, killed_after: int, saved_at: int
) -> None:
    every_5 = [
        "callbacks.last_checkpoint.train_time_interval=null",
        "callbacks.last_checkpoint.every_n_train_steps=5",
    ]
    run_dir = tmp_path / "run"
    killed = pretrain_process(run_dir, *every_5, *signal_at(killed_after, "SIGKILL"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == saved_at
    assert_resumes_exactly(uninterrupted, run_dir, *every_5)


LIMITED_JOB = [*JOB, "trainer.limit_train_batches=10"]  # 2 epochs of 10 steps (of 16)


@pytest.fixture(scope="module")
def uninterrupted_limited(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("limited") / "run", LIMITED_JOB)


@pytest.mark.slow
@pytest.mark.parametrize(("sent_after", "stopped_after"), [(9, 10), (10, 10), (14, 15)])
def test_a_stop_in_an_epoch_cut_by_limit_train_batches_resumes_exactly(
    uninterrupted_limited: Path, tmp_path: Path, sent_after: int, stopped_after: int
) -> None:
    """Noticed on the cut epoch's last step (10) or sent there, the stop waits for the
    epoch's end; in the second epoch, it is at the next step."""
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(sent_after), job=LIMITED_JOB)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"stopped by SIGTERM after step {stopped_after}" in stopped.stderr
    assert_resumes_exactly(uninterrupted_limited, run_dir, job=LIMITED_JOB, steps=20)


@pytest.mark.slow
def test_negative_control_a_sampler_blind_to_the_limit_diverges(
    uninterrupted_limited: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut-epoch resume with the sampler judging "epoch done" without the limit (the
    old defect): the resumed run must differ, so the test above can fail."""
    from contrastive.data import ImageDataModule

    run_dir = tmp_path / "run"
    assert pretrain_process(run_dir, *signal_at(10), job=LIMITED_JOB).returncode == 143
    real_sampler = ImageDataModule.train_sampler

    def blind_sampler(self: ImageDataModule) -> Any:
        real_batches = self.train_batches
        self.train_batches = lambda world=1, limit=None: real_batches(world)  # type: ignore[method-assign]
        try:
            return real_sampler(self)
        finally:
            del self.train_batches

    monkeypatch.setattr(ImageDataModule, "train_sampler", blind_sampler)
    run_job_in(run_dir, pretrain, "pretrain", *LIMITED_JOB)
    expected = training_state(uninterrupted_limited / "checkpoints" / "last.ckpt")
    resumed = training_state(run_dir / "checkpoints" / "last.ckpt")
    # It replays the rest of epoch 0 (6 batches) as epoch 1: fewer steps, other weights.
    assert resumed["global_step"] == 16 and expected["global_step"] == 20
    assert any(d.startswith(".state_dict") for d in differences(expected, resumed))


MAX_STEPS_JOB = [*JOB, "trainer.max_steps=20"]  # ends 4 steps into the second epoch


@pytest.mark.slow
@pytest.mark.parametrize(("sent_after", "stopped_after"), [(8, 9), (19, 20)])
def test_a_stop_under_max_steps_resumes_exactly(
    tmp_path: Path, sent_after: int, stopped_after: int
) -> None:
    straight = finished_run(tmp_path / "straight", MAX_STEPS_JOB)
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *signal_at(sent_after), job=MAX_STEPS_JOB)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"after step {stopped_after}" in stopped.stderr
    assert_resumes_exactly(straight, run_dir, job=MAX_STEPS_JOB, steps=20)


VALIDATED_JOB = [*JOB, "trainer.check_val_every_n_epoch=1"]


@pytest.mark.slow
@pytest.mark.parametrize("sent_at", [16, 32])  # in the first and in the last validation
def test_a_signal_during_validation_stops_at_the_epoch_end_and_resumes_exactly(
    tmp_path: Path, sent_at: int
) -> None:
    straight = finished_run(tmp_path / "straight", VALIDATED_JOB)
    run_dir = tmp_path / "run"
    during = signal_at(sent_at, during="validation")
    stopped = pretrain_process(run_dir, *during, job=VALIDATED_JOB)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert f"stopped by SIGTERM after step {sent_at}" in stopped.stderr
    assert_resumes_exactly(straight, run_dir, job=VALIDATED_JOB)


def test_negative_control_a_resume_without_the_rng_state_differs(
    uninterrupted: Path, interrupted: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same resume, but the view generator restarts from its epoch seed instead of the
    checkpoint's state: the test above must see the difference."""
    stopped, _ = interrupted
    run_dir = tmp_path / "run"
    shutil.copytree(stopped, run_dir)
    restore = SimCLR.on_load_checkpoint

    def forget_rng(self: SimCLR, checkpoint: dict[str, Any]) -> None:
        restore(self, checkpoint)
        self._view_state = None

    monkeypatch.setattr(SimCLR, "on_load_checkpoint", forget_rng)
    run_job_in(run_dir, pretrain, "pretrain", *JOB)
    expected = training_state(uninterrupted / "checkpoints" / "last.ckpt")
    resumed = training_state(run_dir / "checkpoints" / "last.ckpt")
    assert expected["global_step"] == resumed["global_step"] == 32
    assert any(d.startswith(".state_dict") for d in differences(expected, resumed))


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
def test_a_signal_to_one_ddp_rank_stops_both_with_one_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.num_workers=0"]
    result = pretrain_process(run_dir, *ddp, *signal_at(3, "SIGTERM", rank=1))
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "stopped by SIGTERM after step 4" in result.stderr
    checkpoints = sorted(p.name for p in run_dir.rglob("*.ckpt"))
    assert checkpoints == ["last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


@pytest.mark.ddp
def test_a_nan_gradient_on_one_ddp_rank_stops_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.num_workers=0"]
    nan = [
        "+callbacks.nan._target_=tests.helpers.faults.NaNGradientAtStep",
        "+callbacks.nan.step=3",
        "+callbacks.nan.rank=1",
    ]
    result = pretrain_process(run_dir, *ddp, *nan)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "step 3: another rank's loss or gradient is not finite" in result.stderr
    assert "step 3: a gradient is not finite" in result.stderr  # rank 1's own message
    assert sorted(p.name for p in run_dir.rglob("*.ckpt")) == ["nonfinite_step3.ckpt"]


# --- checkpoint files ---------------------------------------------------------------------
def crash_halfway(message: str) -> Any:
    """A stand-in for ``torch.save`` that writes half the file, then fails."""
    real_save = torch.save

    def save(obj: Any, file: Any) -> None:
        real_save(obj, file)
        file.truncate(file.tell() // 2)
        raise OSError(message)

    return save


def test_a_crash_halfway_through_a_save_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastive import atomic

    path = tmp_path / "last.ckpt"
    atomic.AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1)}, path)
    monkeypatch.setattr(atomic.torch, "save", crash_halfway("disk vanished"))
    with pytest.raises(OSError, match="disk vanished"):
        atomic.AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left


def test_a_crash_in_a_job_save_leaves_last_and_best_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastive import atomic

    overrides = [*JOB, "data.num_workers=0", "trainer.check_val_every_n_epoch=1"]
    run_job_in(tmp_path, pretrain, "pretrain", *overrides, "trainer.max_epochs=1")
    checkpoints = tmp_path / "checkpoints"
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    assert set(before) == {"epoch000.ckpt", "last.ckpt"}
    monkeypatch.setattr(atomic.torch, "save", crash_halfway("node lost power"))
    with pytest.raises(OSError, match="node lost power"):
        run_job_in(tmp_path, pretrain, "pretrain", *overrides, "trainer.max_epochs=2")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    assert after == before
    for name in before:  # whole, and still the first epoch's
        assert torch.load(checkpoints / name, weights_only=False)["global_step"] == 16


def test_resume_skips_a_truncated_last_checkpoint_for_the_previous_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*JOB, "data.num_workers=0", "trainer.check_val_every_n_epoch=1"]
    run_job_in(tmp_path, pretrain, "pretrain", *overrides, "trainer.max_epochs=1")
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 3])  # truncated by a crash
    with caplog.at_level("WARNING", logger="contrastive.checkpoints"):
        metrics = run_job_in(tmp_path, pretrain, "pretrain", *overrides, "trainer.max_epochs=2")
    assert "skipping checkpoint" in caplog.text and "last.ckpt" in caplog.text
    assert metrics["train/epochs"] == 2
    assert torch.load(last, weights_only=False)["global_step"] == 32  # 16 resumed + 16 new


def test_resume_with_only_garbage_checkpoints_is_an_error_not_a_fresh_start(
    tmp_path: Path, compose_cfg: Any
) -> None:
    from contrastive.checkpoints import resume_checkpoint
    from contrastive.errors import ConfigError

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage" * 100)
    cfg = compose_cfg(*JOB)
    with pytest.raises(ConfigError, match=r"no usable checkpoint.*last\.ckpt.*resume=null"):
        resume_checkpoint(cfg.resume, Path(cfg.output_dir))


def test_topk_rotation_never_deletes_the_checkpoint_being_resumed_from(tmp_path: Path) -> None:
    # monitor=epoch (mode max) improves every epoch, so each new best replaces the old one.
    overrides = [
        *JOB,
        "data.num_workers=0",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.checkpoint.monitor=epoch",
    ]
    first = tmp_path / "first"
    run_job_in(first, pretrain, "pretrain", *overrides, "trainer.max_epochs=1")
    best = first / "checkpoints" / "epoch000.ckpt"
    assert best.is_file()
    control = tmp_path / "control"
    run_job_in(control, pretrain, "pretrain", *overrides, "trainer.max_epochs=2")
    assert not (control / "checkpoints" / "epoch000.ckpt").exists()  # rotation does delete
    run_job_in(first, pretrain, "pretrain", *overrides, "trainer.max_epochs=2", f"resume={best}")
    assert best.is_file() and (first / "checkpoints" / "epoch001.ckpt").is_file()


def test_a_nan_metric_never_becomes_the_best_checkpoint(tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from contrastive.callbacks import BestCheckpoint

    class NaNScore(pl.Callback):
        def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
            pl_module.log("val/knn_top1", float("nan"))

    saved = {}
    for name, kind in (("ours", BestCheckpoint), ("lightning", ModelCheckpoint)):
        directory = tmp_path / name
        checkpoint = kind(dirpath=directory, monitor="val/knn_top1", mode="max", save_top_k=1)
        cfg_overrides = [*JOB, "data.num_workers=0", "~callbacks.knn", "~callbacks.checkpoint"]
        from contrastive.cli import compose_job

        cfg = compose_job(
            tmp_path / f"{name}-run", "pretrain", *cfg_overrides, "trainer.max_epochs=1"
        )
        from contrastive.jobs.pretrain import build

        datamodule, model, callbacks, _ = build(cfg)
        trainer = pl.Trainer(
            max_epochs=1,
            callbacks=[*callbacks, NaNScore(), checkpoint],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=datamodule)
        saved[name] = sorted(p.name for p in directory.glob("*.ckpt")) if directory.exists() else []
    assert saved["lightning"], "control: Lightning keeps a NaN-scored checkpoint as best"
    assert saved["ours"] == []


# --- non-finite loss ----------------------------------------------------------------------
def nan_loss_on_calls(monkeypatch: pytest.MonkeyPatch, calls: set[int] | None) -> None:
    """Make the InfoNCE loss NaN on the given 0-based training calls (``None``: always)."""
    from contrastive.losses import InfoNCELoss

    real = InfoNCELoss.forward
    count = {"n": 0}

    def forward(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = real(self, *args, **kwargs)
        n, count["n"] = count["n"], count["n"] + 1
        return loss * float("nan") if calls is None or n in calls else loss

    monkeypatch.setattr(InfoNCELoss, "forward", forward)


def test_a_nan_loss_stops_the_run_before_the_step_with_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastive.errors import TrainingHalted
    from tests.helpers.faults import WeightsAroundStep

    nan_loss_on_calls(monkeypatch, {2})
    around = ["+callbacks.around._target_=tests.helpers.faults.WeightsAroundStep"]
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingHalted, match=r"step 2: the loss is not finite") as stop:
        run_job_in(
            run_dir,
            pretrain,
            "pretrain",
            *JOB,
            "data.num_workers=0",
            *around,
            "+callbacks.around.batch_idx=2",
        )
    saved = run_dir / "checkpoints" / "nonfinite_step2.ckpt"
    assert str(saved) in str(stop.value)
    kept = torch.load(saved, weights_only=False)["state_dict"]
    before = WeightsAroundStep.seen["before"]  # the weights as the bad step began
    assert differences(before, {name: kept[name] for name in before}) == []


def test_skip_policy_drops_the_bad_step_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.faults import WeightsAroundStep

    nan_loss_on_calls(monkeypatch, {2})
    around = ["+callbacks.around._target_=tests.helpers.faults.WeightsAroundStep"]
    policy = ["callbacks.nonfinite.policy=skip", "trainer.max_steps=4", "data.num_workers=0"]
    run_job_in(
        tmp_path / "skip",
        pretrain,
        "pretrain",
        *JOB,
        *policy,
        *around,
        "+callbacks.around.batch_idx=2",
    )
    assert differences(WeightsAroundStep.seen["before"], WeightsAroundStep.seen["after"]) == []
    checkpoint = torch.load(tmp_path / "skip" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4
    guard = next(v for k, v in checkpoint["callbacks"].items() if "NonFiniteGuard" in k)
    assert guard == {"skipped": 1}
    assert all(
        torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point()
    )
    # Control: a normal step does change the weights.
    run_job_in(
        tmp_path / "control",
        pretrain,
        "pretrain",
        *JOB,
        *policy,
        *around,
        "+callbacks.around.batch_idx=3",
    )
    assert differences(WeightsAroundStep.seen["before"], WeightsAroundStep.seen["after"])


def test_skip_policy_stops_after_max_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from contrastive.errors import TrainingHalted

    nan_loss_on_calls(monkeypatch, None)
    policy = [
        "callbacks.nonfinite.policy=skip",
        "callbacks.nonfinite.max_skips=2",
        "data.num_workers=0",
    ]
    with pytest.raises(TrainingHalted, match=r"step 2: the loss is not finite.*after 2 skipped"):
        run_job_in(tmp_path, pretrain, "pretrain", *JOB, *policy)


def test_bad_nonfinite_policy_is_refused() -> None:
    from contrastive.callbacks import NonFiniteGuard

    with pytest.raises(ValueError, match=r"policy must be one of \('stop', 'skip'\), got 'ignore'"):
        NonFiniteGuard(policy="ignore")


# --- secrets ------------------------------------------------------------------------------
SECRETS = {
    "WANDB_API_KEY": "f4k3" + "0123456789abcdef" * 2 + "cafe",  # 40 characters, like a real key
    "AWS_SECRET_ACCESS_KEY": "fakeAWSsecret/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "HF_TOKEN": "hf_fakeTokenThatMustNotLeak0123456789",
}


def test_no_secret_from_the_environment_reaches_any_output(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {**SECRETS, "WANDB_MODE": "offline", "WANDB_DIR": str(run_dir)}
    result = pretrain_process(run_dir, "trainer.max_epochs=1", env=env, job=WANDB_JOB)
    assert result.returncode == 0, result.stderr[-3000:]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files) and (run_dir / "backbone.pt").is_file()
    leaks = [
        (str(p.relative_to(run_dir)), name)
        for p in files
        for name, secret in SECRETS.items()
        if secret.encode() in p.read_bytes()
    ]
    leaks += [
        ("stdout/stderr", n) for n, s in SECRETS.items() if s in result.stdout + result.stderr
    ]
    assert leaks == []


# --- untrusted files ----------------------------------------------------------------------
def booby_trapped_backbone(pretrained_run: Path, directory: Path) -> tuple[Path, Path]:
    """A real ``backbone.pt`` that also holds an object whose unpickling creates a marker
    file; returns ``(the file, the marker)``."""
    from tests.helpers.faults import TouchOnLoad

    marker = directory / "pwned"
    payload = torch.load(pretrained_run / "backbone.pt", weights_only=True)
    payload["note"] = TouchOnLoad(str(marker))
    evil = directory / "backbone.pt"
    torch.save(payload, evil)
    return evil, marker


def test_a_checkpoint_that_runs_code_is_refused_unless_trusted(
    tmp_path: Path, pretrained_run: Path
) -> None:
    from contrastive.checkpoints import CheckpointError, load_pretrained

    evil, marker = booby_trapped_backbone(pretrained_run, tmp_path)
    with pytest.raises(CheckpointError, match=r"needs arbitrary code.*trust_checkpoint=true"):
        load_pretrained(evil)
    assert not marker.exists()  # refused before anything ran
    backbone = load_pretrained(evil, trust=True).backbone  # the user vouched for it
    assert marker.exists() and sum(p.numel() for p in backbone.parameters()) > 0


def test_cli_refuses_an_untrusted_pickle_with_a_message(
    tmp_path: Path, pretrained_run: Path
) -> None:
    evil, marker = booby_trapped_backbone(pretrained_run, tmp_path)
    result = run_script("knn_eval.py", f"pretrained={evil}", "data=synthetic")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs arbitrary code" in result.stderr and "trust_checkpoint=true" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


# --- W&B ----------------------------------------------------------------------------------


def test_offline_resume_starts_a_new_offline_run_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers.wandb_reader import wait_for_run

    run_job_in(tmp_path, pretrain, "pretrain", *WANDB_JOB, "trainer.max_epochs=1")
    first = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    first_id = first["contrastive"]["wandb_run_id"]
    with caplog.at_level("WARNING", logger="contrastive.checkpoints"):
        run_job_in(tmp_path, pretrain, "pretrain", *WANDB_JOB, "trainer.max_epochs=2")
    assert f"cannot resume offline run {first_id}" in caplog.text
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    ids = [run.name.rsplit("-", 1)[1] for run in runs]
    assert len(runs) == 2 and first_id in ids and len(set(ids)) == 2
    # run.finish() returns before wandb-core has closed the file: wait for its exit record
    second = wait_for_run(next(r for r in runs if not r.name.endswith(first_id)))
    steps = [step for step, _ in second.metric("train/loss")]
    assert steps and min(steps) >= 16  # the new run carries on from the resumed step


def test_online_resume_continues_the_same_wandb_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online, the checkpoint's run id goes to wandb.init with resume="allow" (captured
    here instead of reaching a server)."""
    import pytorch_lightning as pl

    from contrastive import train

    run_job_in(tmp_path, pretrain, "pretrain", *WANDB_JOB, "trainer.max_epochs=1")
    first_id = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)[
        "contrastive"
    ]["wandb_run_id"]
    started: list[dict[str, Any]] = []

    def capture(cfg: Any, overrides: dict[str, Any]) -> pl.loggers.Logger:
        started.append(overrides)
        return pl.loggers.CSVLogger(str(tmp_path / "csv"))

    monkeypatch.setattr(train, "start_wandb", capture)
    monkeypatch.setenv("WANDB_MODE", "online")
    run_job_in(
        tmp_path, pretrain, "pretrain", *WANDB_JOB, "logger.offline=false", "trainer.max_epochs=2"
    )
    assert started and started[0]["id"] == first_id and started[0]["resume"] == "allow"


def test_wandb_that_cannot_reach_its_server_falls_back_to_offline(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens: as with no network
        "WANDB_API_KEY": "x" * 40,
        "WANDB_INIT_TIMEOUT": "5",
    }
    online = ["logger.offline=false", "trainer.max_epochs=1"]
    result = pretrain_process(run_dir, *online, env=env, job=WANDB_JOB)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start online" in result.stdout + result.stderr
    assert list((run_dir / "wandb").glob("offline-run-*")) and (run_dir / "backbone.pt").is_file()


# --- data order ---------------------------------------------------------------------------
def test_resumable_sampler_continues_an_epoch_and_shards_like_distributed_sampler() -> None:
    from torch.utils.data.distributed import DistributedSampler

    from contrastive.data.sampler import ResumableSampler

    data = list(range(103))
    for rank in (0, 1):
        ours = ResumableSampler(data, num_replicas=2, rank=rank, seed=5)
        theirs = DistributedSampler(data, num_replicas=2, rank=rank, seed=5, drop_last=True)  # type: ignore[arg-type]
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)
        full = list(ours)  # epoch 3 again: the order depends on seed + epoch only
        ours.resume(epoch=3, batches_done=4, batch_size=8)
        assert list(ours) == full[32:]
        assert list(ours) == full  # a resume applies to one pass
    sampler = ResumableSampler(data)
    sampler.set_epoch(1)
    other = list(sampler)
    sampler.set_epoch(2)
    assert sorted(other) == data and list(sampler) != other
    with pytest.raises(ValueError, match="batch_size >= 1"):
        sampler.resume(epoch=0, batches_done=1, batch_size=0)


# --- data integrity -----------------------------------------------------------------------
@needs_fashion_mnist
def test_a_damaged_dataset_file_is_named_before_training(tmp_path: Path) -> None:
    import gzip

    root = tmp_path / "fmnist"
    root.mkdir()
    for source in REAL_FASHION_MNIST.parent.glob("*.gz"):
        shutil.copy(source, root / source.name)
    labels = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still a well-formed IDX file
    labels.write_bytes(gzip.compress(bytes(raw)))
    run_dir = tmp_path / "run"
    result = run_script(
        "pretrain.py", f"data.source.root={root}", "logger=none", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert str(labels) in result.stderr and "sha256" in result.stderr
    assert (
        "data.source.verify=false" in result.stderr
        and "apt-get install --reinstall" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (run_dir / "checkpoints").exists()
    unchecked = run_script(
        "pretrain.py",
        f"data.source.root={root}",
        "data.source.verify=false",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert unchecked.returncode == 0, unchecked.stderr[-2000:]


@needs_fashion_mnist
def test_the_installed_fashion_mnist_verifies() -> None:
    from contrastive.data.sources import load_fashion_mnist

    for train in (True, False):
        arrays = load_fashion_mnist(None, train=train, verify=True)
        assert len(arrays.images) == (60_000 if train else 10_000)


def test_cifar_files_are_checked_against_torchvision_md5(tmp_path: Path) -> None:
    from contrastive.data import checksums
    from contrastive.data.errors import DatasetFormatError

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.parent.mkdir()
    batch.write_bytes(b"not the official batch")
    with pytest.raises(
        DatasetFormatError,
        match=r"data_batch_3.*md5 is .*official cifar-10-batches-py/data_batch_3 has 54ebc095",
    ):
        checksums.verify(batch, batch.read_bytes(), "Download it again")
    checksums.verify(tmp_path / "my_subset.bin", b"anything", "-")  # unlisted: not checked
    assert checksums.known_name(Path("/x/t10k-images.idx3-ubyte.gz")) == "t10k-images-idx3-ubyte"


def test_resume_with_views_made_in_workers_is_bit_identical(tmp_path: Path) -> None:
    """``augment.backend=per_sample``: views drawn in 2 DataLoader workers, each sample's
    from its (seed, epoch, index) seed, so the resumed epoch redraws the same views."""
    workers = ["augment.backend=per_sample"]
    straight = tmp_path / "straight"
    assert pretrain_process(straight, *workers).returncode == 0
    run_dir = tmp_path / "stopped"
    assert pretrain_process(run_dir, *workers, *signal_at(20)).returncode == 143
    assert_resumes_exactly(straight, run_dir, *workers)
