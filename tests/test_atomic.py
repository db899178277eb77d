"""contrastive.atomic: a save that crashes halfway leaves the previous file whole and no
temporary behind, and a job's crashed save leaves last.ckpt and the best one loadable; a
full or read-only disk is a StorageError naming the directory and its free space, with
the previous file intact."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.errors import StorageError
from contrastive.jobs.pretrain import pretrain
from tests.helpers.faults import refuse_writes
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


# --- a full or read-only disk ------------------------------------------------------------
# (errno, where it strikes): a full disk fails the write (or a quota the write), a
# read-only or forbidden directory the temporary file's creation, and either the rename.
DISK_FAULTS = [
    ("ENOSPC", "write"),
    ("EDQUOT", "write"),
    ("EACCES", "open"),
    ("EPERM", "open"),
    ("EROFS", "open"),
    ("ENOSPC", "replace"),
    ("EACCES", "replace"),
]


@pytest.fixture
def disk_fault() -> Iterator[Callable[..., None]]:
    """``disk_fault(name, error, stage)``: :func:`tests.helpers.faults.refuse_writes`,
    undone after the test."""
    undo: list[Callable[[], None]] = []
    yield lambda *fault: undo.append(refuse_writes(*fault))
    for step in reversed(undo):
        step()


@pytest.mark.parametrize(("error", "stage"), DISK_FAULTS)
def test_a_full_or_read_only_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, disk_fault: Callable[..., None], error: str, stage: str
) -> None:
    from contrastive.atomic import AtomicCheckpointIO
    from contrastive.cli import USER_ERRORS

    directory = tmp_path / "checkpoints"
    path = directory / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(1), "w": torch.ones(4096)}, path)
    before = path.read_bytes()
    disk_fault("last.ckpt", error, stage)
    with pytest.raises(StorageError) as raised:
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(2), "w": torch.ones(4096)}, path)
    assert isinstance(raised.value, USER_ERRORS)  # the CLI prints it and exits 2
    assert raised.value.errno == getattr(errno, error)
    message = str(raised.value)
    assert message.startswith(f"cannot write {path}: {os.strerror(getattr(errno, error))}")
    assert f"({error}); {directory} has " in message
    assert re.search(r"has \d+\.\d [KMG]iB free of \d+\.\d [KMG]iB\. ", message)
    assert "The previous last.ckpt is intact." in message
    assert "rerun the same command" in message
    assert path.read_bytes() == before
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in directory.iterdir()] == ["last.ckpt"]  # no temporary left


@pytest.mark.parametrize(("error", "stage"), [("ENOSPC", "write"), ("EROFS", "replace")])
def test_a_full_disk_keeps_the_previous_metrics_and_backbone(
    tmp_path: Path, disk_fault: Callable[..., None], error: str, stage: str
) -> None:
    from contrastive.atomic import atomic_write_text
    from contrastive.backbones import build_backbone
    from contrastive.checkpoints import load_pretrained, save_backbone

    metrics, backbone = tmp_path / "metrics.json", tmp_path / "backbone.pt"
    atomic_write_text(metrics, json.dumps({"val/knn_top1": 0.5, "pad": "x" * 1000}))
    save_backbone(build_backbone("small_cnn", widths=[4, 8]), str(backbone))
    before = {p.name: p.read_bytes() for p in (metrics, backbone)}
    disk_fault("metrics.json", error, stage)
    disk_fault("backbone.pt", error, stage)
    with pytest.raises(StorageError, match=r"The previous metrics\.json is intact"):
        atomic_write_text(metrics, json.dumps({"val/knn_top1": 0.9, "pad": "y" * 1000}))
    with pytest.raises(StorageError, match=r"The previous backbone\.pt is intact"):
        save_backbone(build_backbone("small_cnn", widths=[4, 16]), str(backbone))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads(metrics.read_text())["val/knn_top1"] == 0.5
    assert load_pretrained(backbone).spec["kwargs"]["widths"] == [4, 8]


def test_a_full_disk_before_the_first_save_leaves_no_file(
    tmp_path: Path, disk_fault: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    from contrastive import atomic

    disk_fault("metrics.json", "ENOSPC", "write")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: (_ for _ in ()).throw(OSError()))
    with pytest.raises(StorageError) as raised:
        atomic.atomic_write_text(tmp_path / "metrics.json", "{}" * 1000)
    assert f"{tmp_path} has unknown. No metrics.json was written" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("error", "stage"), [("EIO", "write"), ("ENOENT", "open")])
def test_other_os_errors_are_not_called_a_full_disk(
    tmp_path: Path, disk_fault: Callable[..., None], error: str, stage: str
) -> None:
    """A negative control: only a full or unwritable disk becomes a StorageError."""
    from contrastive.atomic import atomic_write_text

    path = tmp_path / "metrics.json"
    atomic_write_text(path, "{}")
    disk_fault("metrics.json", error, stage)
    with pytest.raises(OSError) as raised:
        atomic_write_text(path, "[]" * 1000)
    assert not isinstance(raised.value, StorageError)
    assert raised.value.errno == getattr(errno, error)
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_really_full_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A real 256 KiB tmpfs, filled by the save itself: ``torch.save`` reports the failed
    write as a RuntimeError, still a StorageError here (needs root and a mountable tmpfs)."""
    from contrastive.atomic import atomic_save

    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]
    if subprocess.run(mount, capture_output=True, timeout=20).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        path = disk / "checkpoints" / "last.ckpt"
        atomic_save({"w": torch.ones(1000)}, path)
        before = path.read_bytes()
        with pytest.raises(StorageError, match="No space left on device") as raised:
            atomic_save({"w": torch.ones(100_000)}, path)  # 400 kB
        assert isinstance(raised.value.__cause__, RuntimeError)  # torch's wrapping
        assert f"{path.parent} has " in str(raised.value)
        assert path.read_bytes() == before
        assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=20)


def test_the_cli_prints_a_storage_error_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from omegaconf import OmegaConf

    from contrastive.cli import run_job

    def job(cfg: Any) -> dict[str, Any]:
        raise StorageError("cannot write /run/last.ckpt: ...", Path("/run/last.ckpt"), 28)

    with pytest.raises(SystemExit) as exited:
        run_job(job, OmegaConf.create({}))
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: cannot write /run/last.ckpt: ...\n"
