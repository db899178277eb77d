"""Shared fixtures: W&B offline, composing the Hydra configs the way the entry points do,
and one small pretraining run (and a probe on it) for the tests that need a run directory.
Helpers live in :mod:`tests.helpers`; nothing imports this file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from contrastive.cli import compose_job
from tests.helpers.jobs import QUIET, run_job_in


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("WANDB_SILENT", "true")


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
