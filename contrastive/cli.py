"""Console entry points: Hydra mains that turn user mistakes into one clear message."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue

from contrastive import faults, schema
from contrastive.checkpoints import CheckpointError
from contrastive.conf import conf_dir
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.errors import ConfigError, Preempted, StorageError, TrainingHalted


def _submitit_signal() -> str:
    from contrastive.callbacks.preemption import submitit_signal

    return submitit_signal()


CONF_DIR = str(conf_dir())
schema.register()  # the typed schemas conf/ refers to (/schema/<name>)
# ${submitit_signal:}: the signal submitit warns a job with (SIGUSR2 unless
# SUBMITIT_PREEMPT_SIGNAL says otherwise), for callbacks.preemption.signals
OmegaConf.register_new_resolver("submitit_signal", _submitit_signal, replace=True)
# SimCLR makes its views in LightningModule.on_after_batch_transfer on purpose; Lightning
# notes at every fit that the module's hook wins over the datamodule's.
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
# The training loader resumes mid-epoch through its sampler (contrastive.data.sampler), not
# through Lightning's loader state_dict, which this warning asks for.
warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
# The evaluation jobs keep frozen backbones and teachers in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
USER_ERRORS = (
    ConfigError,
    CheckpointError,
    DatasetNotFoundError,
    DatasetFormatError,
    InstantiationException,
    MissingMandatoryValue,
    StorageError,
)


def compose_job(run_dir: str | Path, config_name: str, *overrides: str) -> DictConfig:
    """``config_name`` composed with ``overrides`` as its entry point would compose it, for
    running a job in-process (tests, benchmarks): output directory ``run_dir``, HydraConfig
    set (so ``${hydra:...}`` resolves), and no ``hydra`` node left in the task's config."""
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra.compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.output_dir = str(run_dir)
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


def _user_error_message(error: BaseException) -> str:
    # Hydra wraps errors raised while building an object; show the root cause's words.
    message = str(error)
    cause = error.__cause__
    if isinstance(error, InstantiationException) and cause is not None:
        message = f"{message.splitlines()[0]}\n  {type(cause).__name__}: {cause}"
    return message


def run_job(job: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig) -> float | None:
    """Run ``job``; exit with status 2 and a one-paragraph message on a user error, with
    status 1 and one message on a lost rank or DataLoader worker
    (:mod:`contrastive.faults`), and with ``128 + signal`` after a signal stopped it (its
    checkpoint written)."""
    try:
        metrics = job(cfg)
    except USER_ERRORS as error:
        print(f"error: {_user_error_message(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingHalted as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None
    except RuntimeError as error:  # a lost peer rank or DataLoader worker: one message
        workers = cfg.get("data", {}).get("num_workers") if "data" in cfg else None
        message = faults.describe(error, cfg.get("output_dir"), workers)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    except Preempted as stop:  # a checkpoint is written; exit 128 + signal (143: SIGTERM)
        print(str(stop), file=sys.stderr)
        if stop.chain is not None:  # submitit's handler: it requeues the job and exits
            stop.chain(stop.signum, None)
        raise SystemExit(stop.exit_code) from None
    value = metrics.get(cfg.get("optimized_metric", "val/knn_top1"))
    return float(value) if value is not None else None


@hydra.main(config_path=CONF_DIR, config_name="pretrain", version_base="1.3")
def pretrain_main(cfg: DictConfig) -> float | None:
    """``contrastive-pretrain [overrides...]``: SimCLR pretraining."""
    from contrastive.jobs.pretrain import pretrain

    return run_job(pretrain, cfg)


@hydra.main(config_path=CONF_DIR, config_name="linear_probe", version_base="1.3")
def linear_probe_main(cfg: DictConfig) -> float | None:
    """``contrastive-linear-probe pretrained=<run dir | backbone.pt | last.ckpt>``."""
    from contrastive.jobs.linear_probe import linear_probe

    return run_job(linear_probe, cfg)


@hydra.main(config_path=CONF_DIR, config_name="knn", version_base="1.3")
def knn_main(cfg: DictConfig) -> float | None:
    """``contrastive-knn pretrained=<run dir | backbone.pt | last.ckpt>``."""
    from contrastive.jobs.knn import knn_eval

    return run_job(knn_eval, cfg)


@hydra.main(config_path=CONF_DIR, config_name="distill", version_base="1.3")
def distill_main(cfg: DictConfig) -> float | None:
    """``contrastive-distill teacher=<linear-probe run dir>``."""
    from contrastive.jobs.distill import distill

    return run_job(distill, cfg)
