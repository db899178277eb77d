"""The checkpoint callbacks: LastCheckpoint's timed saves replace each other and survive
SIGKILL; BestCheckpoint's top-k rotation never deletes the checkpoint a run resumed from,
and a NaN score never makes a checkpoint the best."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import torch

from contrastive.jobs.pretrain import pretrain
from tests.helpers.jobs import run_job_in
from tests.helpers.resume import JOB, pretrain_process, signal_at


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
