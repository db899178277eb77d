"""NonFiniteGuard: a non-finite loss or gradient stops the run before the step (every DDP
rank, one checkpoint of the weights as the step began), or, with policy=skip, the step is
dropped, up to max_skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.jobs.pretrain import pretrain
from tests.helpers.jobs import run_job_in
from tests.helpers.resume import JOB, differences, pretrain_process


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
