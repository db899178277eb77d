"""Running the jobs as the entry points do: in-process on a composed config, or as a script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from contrastive.cli import CONF_DIR, compose_job

ROOT = Path(__file__).resolve().parents[2]  # the repository
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]
# The evaluation jobs' small data: 256 synthetic images of 10 learnable classes.
DATA = ["data=synthetic", "data.source.num_samples=256"]


def run_job_in(
    run_dir: Path, job: Callable[[DictConfig], dict[str, Any]], config_name: str, *overrides: str
) -> dict[str, Any]:
    """Run ``job`` on :func:`contrastive.cli.compose_job`'s config."""
    cfg = compose_job(run_dir, config_name, *overrides)
    try:
        return job(cfg)
    finally:
        GlobalHydra.instance().clear()


def run_script(
    script: str, *overrides: str, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with Hydra ``overrides`` as a user would (W&B offline)."""
    command = [sys.executable, str(ROOT / "scripts" / script)]
    command += overrides
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def options(group: str) -> list[str]:
    """Every option of a config group, from the files in conf/<group>/."""
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
