"""contrastive.atomic: a save that crashes halfway leaves the previous file whole and no
temporary behind, and a job's crashed save leaves last.ckpt and the best one loadable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.jobs.pretrain import pretrain
from tests.helpers.jobs import run_job_in
from tests.helpers.resume import JOB


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
