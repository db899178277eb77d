"""Hydra's submitit launchers: a real local job, and the SLURM job that would be submitted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from contrastive.cli import CONF_DIR
from tests.helpers.jobs import ROOT


def test_submitit_local_runs_a_real_short_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "pretrain.py"),
        "--multirun",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={sweep}",
        "data=synthetic",
        "data.source.num_samples=256",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["train/epochs"] == 1 and "val/knn_top1" in metrics
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # it went through submitit


class _Captured(Exception):
    pass


def test_submitit_slurm_job_has_the_configured_resources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose the SLURM launcher as a user would and capture the sbatch script its
    executor writes, instead of calling sbatch (no cluster here)."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "pretrain",
            overrides=[
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.nodes=2",
                "hydra.launcher.gpus_per_node=4",
                "hydra.launcher.tasks_per_node=4",
                "hydra.launcher.timeout_min=720",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.account=ssl-team",
                f"hydra.sweep.dir={tmp_path}",
                "trainer=ddp",
                "trainer.num_nodes=2",
                "trainer.devices=4",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    captured: dict[str, Any] = {}

    def map_array(self: submitit.AutoExecutor, fn: Any, *args: Any) -> Any:
        captured["sbatch"] = self._executor._make_submission_file_text("python job.py", "uid")
        raise _Captured

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    real_which = submitit.slurm.slurm.shutil.which
    monkeypatch.setattr(
        submitit.slurm.slurm.shutil,
        "which",
        lambda name, *a, **k: f"/usr/bin/{name}" if name == "srun" else real_which(name, *a, **k),
    )
    with pytest.raises(_Captured):
        launcher.launch([["data=synthetic"]], initial_job_idx=0)
    sbatch = captured["sbatch"]
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=720",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=ssl-team",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in sbatch, sbatch


@pytest.mark.parametrize(
    ("preempt_signal", "caught"),
    [(None, "SIGUSR2"), ("USR1", None)],
)
def test_preemption_catches_the_signal_submitit_warns_with(
    preempt_signal: str | None, caught: str | None
) -> None:
    """callbacks.preemption.signals takes submitit's signal (SUBMITIT_PREEMPT_SIGNAL,
    read by submitit at import) through ${submitit_signal:}; a repeat is dropped."""
    code = (
        "from hydra.utils import instantiate\n"
        "from contrastive.cli import compose_job\n"
        "cfg = compose_job('run', 'pretrain')\n"
        "print(' '.join(s.name for s in instantiate(cfg.callbacks.preemption).signals))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SUBMITIT_PREEMPT_SIGNAL"}
    if preempt_signal is not None:
        env["SUBMITIT_PREEMPT_SIGNAL"] = preempt_signal
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = ["SIGTERM", "SIGINT", "SIGUSR1"] + ([caught] if caught else [])
    assert result.stdout.split() == expected
