"""Data-parallel pretraining end to end on CPU with gloo: 2 processes, one set of outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.jobs import ROOT
from tests.helpers.wandb_reader import wait_for_run

# 2054 synthetic training images -> a 513-image test split: odd, so the DistributedSampler
# pads one rank and the scorers must drop the duplicate.
JOB = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "data=synthetic",
    "data.source.num_samples=2054",
    "data.batch_size=64",
    "data.eval_batch_size=100",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
]
TEST_SET_SIZE = 2054 // 4


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_one_set_of_outputs(run_dir: Path) -> None:
    assert [p for p in run_dir.rglob("*") if p.name == "checkpoints"] == [run_dir / "checkpoints"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    assert len(list(run_dir.rglob("metrics.json"))) == 1
    assert len(list(run_dir.rglob("backbone.pt"))) == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert not (run_dir / "run.lock").exists()  # rank zero's, released; no rank refused
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Every test image scored exactly once, across both processes.
    assert metrics["val/knn_num_test_samples"] == TEST_SET_SIZE
    wandb_run = wait_for_run(run_dir / "wandb")
    assert wandb_run.metric("val/knn_top1") and wandb_run.metric("train/loss")


@pytest.mark.ddp
def test_trainer_ddp_two_cpu_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = str(ROOT / "scripts" / "pretrain.py")
    run([sys.executable, script, *JOB, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_set_of_outputs(run_dir)


@pytest.mark.ddp
@pytest.mark.slow  # CI time (over 20 s); make test-all runs it
def test_torchrun_two_processes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1"]
    command = [*torchrun, "--nproc_per_node=2", str(ROOT / "scripts" / "pretrain.py")]
    run([*command, *JOB, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert_one_set_of_outputs(run_dir)
