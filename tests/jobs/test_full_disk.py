"""A full or read-only disk on the small synthetic pretraining job, as scripts/pretrain.py
runs it: each save that the filesystem refuses (last.ckpt, backbone.pt, metrics.json)
stops the job with one message (exit 2, no traceback) and leaves the previous file whole,
and the same command, once the disk is fixed, continues. The faults are injected by
:class:`tests.helpers.faults.DiskFaultAtStep` (root ignores file modes, so a chmod cannot
make EACCES here). The default Fashion-MNIST job's case runs in CI:
tests/jobs/test_lost_work.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from contrastive.checkpoints import load_pretrained
from tests.helpers.resume import disk_fault_at, finished_run, pretrain_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("finished") / "run")


def global_step(run_dir: Path) -> int:
    path = run_dir / "checkpoints" / "last.ckpt"
    return int(torch.load(path, weights_only=False)["global_step"])


def the_error(result: subprocess.CompletedProcess[str], path: Path, reason: str) -> str:
    """The one ``error:`` line of a job stopped by the disk (exit 2, no traceback)."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith(f"error: cannot write {path}: {reason}; {path.parent} has ")
    assert " free of " in errors[0]
    assert f"The previous {path.name} is intact." in errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("error", "stage", "reason"),
    [
        ("EACCES", "open", "Permission denied (EACCES)"),  # the directory made unwritable
        ("EROFS", "replace", "Read-only file system (EROFS)"),  # remounted read-only
    ],
    ids=["EACCES-open", "EROFS-replace"],
)
def test_an_unwritable_checkpoint_directory_keeps_the_last_checkpoint(
    tmp_path: Path, error: str, stage: str, reason: str
) -> None:
    """After the first epoch's last.ckpt (step 16) the checkpoint directory turns
    unwritable: the second epoch's save fails, the first is whole, and the rerun resumes
    from it."""
    run_dir = tmp_path / "run"
    stopped = pretrain_process(run_dir, *disk_fault_at(17, "last.ckpt", error, stage))
    message = the_error(stopped, run_dir / "checkpoints" / "last.ckpt", reason)
    assert f"Make {run_dir / 'checkpoints'} writable" in message
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert global_step(run_dir) == 16
    resumed = pretrain_process(run_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}"
        in (run_dir / "pretrain.log").read_text()
    )
    assert global_step(run_dir) == 32


@pytest.mark.parametrize("name", ["backbone.pt", "metrics.json"])
def test_a_full_disk_keeps_the_previous_backbone_and_metrics(
    finished: Path, tmp_path: Path, name: str
) -> None:
    """A finished run is trained one epoch more in its directory, and the disk is full
    when ``name`` is written at the end: the previous ``name`` is byte for byte the
    finished run's, and the rerun (nothing left to train) writes the new one."""
    run_dir = Path(shutil.copytree(finished, tmp_path / "run"))
    before = (run_dir / name).read_bytes()
    longer = "trainer.max_epochs=3"
    stopped = pretrain_process(run_dir, longer, *disk_fault_at(0, name))
    the_error(stopped, run_dir / name, "No space left on device (ENOSPC)")
    assert (run_dir / name).read_bytes() == before
    assert not list(run_dir.glob(f".{name}.*"))  # no temporary left
    assert global_step(run_dir) == 48  # the third epoch's checkpoint was written
    if name == "backbone.pt":
        assert load_pretrained(run_dir).metrics["train/epochs"] == 2
        assert not (run_dir / "metrics.json").read_text().count('"train/epochs": 3')
    else:  # backbone.pt comes first and was written
        assert load_pretrained(run_dir).metrics["train/epochs"] == 3
        assert '"train/epochs": 2' in (run_dir / "metrics.json").read_text()
    rerun = pretrain_process(run_dir, longer)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (run_dir / name).read_bytes() != before
    assert load_pretrained(run_dir).metrics["train/epochs"] == 3
    assert '"train/epochs": 3' in (run_dir / "metrics.json").read_text()
