"""Shared fixtures: composing the Hydra configs the way the entry points do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from contrastive.cli import CONF_DIR, compose_job

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion_mnist = pytest.mark.skipif(
    not REAL_FASHION_MNIST.exists(), reason="Fashion-MNIST not installed (make data)"
)


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """``compose_cfg(*overrides, config_name="pretrain")`` -> a resolved-ready config whose
    output_dir is this test's tmp_path, with HydraConfig set as in a real run."""
    GlobalHydra.instance().clear()

    def _compose(*overrides: str, config_name: str = "pretrain") -> DictConfig:
        return compose_job(tmp_path, config_name, *overrides)

    yield _compose
    GlobalHydra.instance().clear()


QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]


def run_job_in(
    run_dir: Path, job: Callable[[DictConfig], dict[str, Any]], config_name: str, *overrides: str
) -> dict[str, Any]:
    """Run ``job`` on :func:`contrastive.cli.compose_job`'s config."""
    cfg = compose_job(run_dir, config_name, *overrides)
    try:
        return job(cfg)
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch pretraining run on 256 synthetic images (width-8/16 small CNN)."""
    from contrastive.jobs.pretrain import pretrain

    run = tmp_path_factory.mktemp("pretrain")
    overrides = ["data=synthetic", "data.source.num_samples=256", "data.batch_size=64"]
    run_job_in(
        run,
        pretrain,
        "pretrain",
        *overrides,
        "trainer.max_epochs=1",
        "backbone.widths=[8,16]",
        *QUIET,
    )
    return run


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory: pytest.TempPathFactory, pretrained_run: Path) -> Path:
    """A linear-probe run on ``pretrained_run``: a distillation teacher directory."""
    from contrastive.jobs.linear_probe import linear_probe

    run = tmp_path_factory.mktemp("probe")
    run_job_in(
        run,
        linear_probe,
        "linear_probe",
        f"pretrained={pretrained_run}",
        "data=synthetic",
        "data.source.num_samples=256",
        "probe.batch_size=32",
        "probe.optimizer.lr=1e-2",
        "trainer.max_epochs=10",
        *QUIET,
    )
    return run


def run_script(
    script: str, *overrides: str, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script>`` with Hydra ``overrides`` as a user would (W&B offline)."""
    command = [sys.executable, str(Path(__file__).resolve().parents[1] / "scripts" / script)]
    command += overrides
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def fit_quietly(
    model: pl.LightningModule, inputs: Tensor, targets: Tensor, epochs: int, batch_size: int = 64
) -> None:
    """Fit ``model`` on shuffled ``(inputs, targets)`` batches, no logger, checkpoint or bar."""
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=batch_size, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader)


def options(group: str) -> list[str]:
    """Every option of a config group, from the files in conf/<group>/."""
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


os.environ.setdefault("WANDB_SILENT", "true")
