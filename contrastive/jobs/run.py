"""The plumbing every job shares, so that no job imports another.

:class:`Run` owns a job's prologue and epilogue: the timer, the seed, the output
directory, the W&B (or other) logger and its hyperparameters, the provenance written into
``backbone.pt``, ``metrics.json``, the summary line, and closing the loggers and the
process group, also when a signal stops the job; and the run directory's lock
(:mod:`contrastive.jobs.lock`), so that two jobs never write one run directory.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from contrastive import distributed
from contrastive.atomic import atomic_write_text
from contrastive.callbacks.progress import progress_bar
from contrastive.checkpoints import Provenance
from contrastive.errors import Preempted
from contrastive.jobs import lock

log = logging.getLogger(__name__)


def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``-dirty`` when it has local
    changes), or ``None`` outside a git checkout."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The one-element entries of ``values`` (tensors or numbers) as floats."""
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def wandb_offline(cfg: DictConfig) -> bool:
    """Whether the configured W&B logger runs offline (``logger.offline`` or
    ``WANDB_MODE=offline``)."""
    mode = os.environ.get("WANDB_MODE", "")
    return bool(cfg.logger.get("offline", False)) or mode in ("offline", "dryrun", "disabled")


def start_wandb(cfg: DictConfig, overrides: dict[str, Any]) -> pl.loggers.WandbLogger:
    """The W&B logger, started now; an online start that fails (no network, W&B down, a
    bad key) falls back to an offline run with a warning: W&B never fails a job."""
    logger = instantiate(cfg.logger, _convert_="all", **overrides)
    if wandb_offline(cfg):
        return logger
    try:
        logger.experiment  # noqa: B018 - wandb.init runs here, on rank zero
    except Exception as error:
        log.warning(
            "W&B could not start online (%s: %s); logging offline under %s instead, "
            "upload it later with `wandb sync`",
            type(error).__name__,
            str(error).splitlines()[0][:200] if str(error) else "",
            cfg.logger.get("save_dir"),
        )
        import wandb

        wandb.teardown()  # drop what the failed start left behind
        os.environ["WANDB_MODE"] = "offline"  # this process only: it outranks offline=True
        offline = {k: v for k, v in overrides.items() if k not in ("id", "resume")}
        logger = instantiate(cfg.logger, _convert_="all", **offline, offline=True)
    return logger


def build_logger(
    cfg: DictConfig, source: Provenance | None = None, resume_run_id: str | None = None
) -> pl.loggers.Logger | bool:
    """The job's logger, with the composed config, the git commit and (for evaluation jobs,
    from ``source``, the provenance of the backbone they load) the pretraining config as
    hyperparameters. A W&B run joins the W&B group of the pretraining run it evaluates
    unless ``group`` is set, so one experiment's runs sit together on the dashboard. A
    resumed pretraining job passes the W&B run id its checkpoint recorded: online, the run
    continues on the same dashboard run; offline (W&B cannot resume offline runs) it
    starts a new offline run, with a warning naming both."""
    if not cfg.get("logger") or "_target_" not in cfg.logger:
        return False
    overrides: dict[str, Any] = {}
    logger: pl.loggers.Logger
    if str(cfg.logger._target_).endswith("WandbLogger"):
        group = cfg.get("group") or (source.wandb_group if source else None)
        if group:
            overrides["group"] = group
        if resume_run_id and wandb_offline(cfg):
            log.warning(
                "W&B is offline and cannot resume offline run %s: this job logs to a new "
                "offline run; `wandb sync` both",
                resume_run_id,
            )
        elif resume_run_id:
            overrides.update(id=resume_run_id, resume="allow")
        logger = start_wandb(cfg, overrides)
    else:
        logger = instantiate(cfg.logger, _convert_="all")
    hyperparameters: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hyperparameters["git_commit"] = git_commit()
    if source is not None and source.config is not None:
        hyperparameters["pretrain_config"] = source.config
    logger.log_hyperparams(hyperparameters)
    return logger


def finish_loggers(
    loggers: list[pl.loggers.Logger], metrics: dict[str, Any], is_global_zero: bool = True
) -> None:
    """Put the final metrics in each W&B run's summary and close it (so the run file is
    complete when the job returns, not only at interpreter exit), then release the process
    group on every rank."""
    for logger in loggers:
        if not is_global_zero:
            continue
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.experiment.summary.update(metrics)
            logger.experiment.finish()
        else:
            logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
            logger.finalize("success")
    distributed.shutdown()


def build_trainer(node: DictConfig, callbacks: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    """The ``trainer:`` node with ``callbacks``, and a progress display unless
    ``trainer.enable_progress_bar=false``: a Rich bar in a terminal, log lines otherwise
    (:func:`~contrastive.callbacks.progress.progress_bar`)."""
    if node.get("enable_progress_bar") is not False:
        callbacks = [*callbacks, progress_bar(int(node.get("log_every_n_steps") or 50))]
    return instantiate(node, callbacks=callbacks, **kwargs)


class Run:
    """One job's run, used as ``with Run(cfg) as run: ...; return run.finish(...)``.

    Entering takes the run directory's lock on the global rank zero (refusing, with
    :class:`~contrastive.errors.RunDirectoryInUse`, a directory another job holds), starts
    the timer and seeds every generator from ``cfg.seed`` (when the job has one); leaving,
    however it leaves, releases the lock. :meth:`logger` builds the configured logger;
    :meth:`finish` writes ``metrics.json``, prints the summary line and closes the
    loggers. A job stopped by a signal (:class:`~contrastive.errors.Preempted`, its
    checkpoint written) leaves with its W&B runs marked preempted, so the rerun can
    continue them, and the process group closed.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        self.loggers: list[pl.loggers.Logger] = []
        self.started = time.perf_counter()
        self.lock: lock.Lock | None = None

    def __enter__(self) -> Run:
        if lock.is_global_zero():  # before anything is written to the run directory
            self.lock = lock.acquire(self.output_dir)
        self.started = time.perf_counter()
        if self.cfg.get("seed") is not None:
            pl.seed_everything(self.cfg.seed, workers=True)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if isinstance(error, Preempted):
                for logger in self.loggers if distributed.rank() == 0 else []:
                    if isinstance(logger, pl.loggers.WandbLogger):
                        logger.experiment.mark_preempting()
                        logger.experiment.finish(exit_code=1)
                distributed.shutdown()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None

    def logger(
        self, source: Provenance | None = None, resume_run_id: str | None = None
    ) -> pl.loggers.Logger | bool:
        """The configured logger (``False`` for none), closed by :meth:`finish`."""
        logger = build_logger(self.cfg, source, resume_run_id)
        if isinstance(logger, pl.loggers.Logger):
            self.loggers.append(logger)
        return logger

    def provenance(self, source: Provenance | None = None) -> Provenance:
        """Where this job's weights come from: its source's (an evaluation job passes the
        backbone's through), or this run's W&B group, composed config and git commit."""
        if source is not None:
            return source
        cfg = self.cfg
        group = cfg.get("group") or (cfg.logger.get("group") if cfg.get("logger") else None)
        return Provenance(
            wandb_group=group,
            config=OmegaConf.to_container(cfg, resolve=True),  # type: ignore[arg-type]
            git_commit=git_commit(),
        )

    def log_artifact(self, path: Path, metrics: dict[str, Any], setting: str | bool) -> None:
        """Log ``path`` (a ``backbone.pt``) as a W&B model artifact: ``setting="auto"`` on
        online runs only, ``True`` also offline (stored with the run for ``wandb sync``),
        ``False`` never."""
        for logger in self.loggers:
            if not isinstance(logger, pl.loggers.WandbLogger):
                continue
            run = logger.experiment
            if setting is False or (setting == "auto" and run.offline):
                continue
            import wandb

            artifact = wandb.Artifact(f"backbone-{run.id}", type="model", metadata=metrics)
            artifact.add_file(str(path))
            run.log_artifact(artifact)

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def finish(
        self,
        metrics: dict[str, Any],
        headline: str,
        shown: tuple[str, ...],
        is_global_zero: bool = True,
    ) -> dict[str, Any]:
        """Add ``time/total_seconds``, write ``metrics.json`` (atomically: a full disk
        raises :class:`~contrastive.errors.StorageError` and keeps the previous one) and
        print ``headline``: the ``shown`` metrics (on the global rank zero), then close
        the loggers."""
        metrics["time/total_seconds"] = self.seconds()
        if is_global_zero:
            path = self.output_dir / "metrics.json"
            atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True))
            values = ", ".join(f"{k}={metrics[k]:.4f}" for k in shown if k in metrics) or "-"
            minutes = metrics["time/total_seconds"] / 60
            log.info("%s: %s (%.1f min)", headline, values, minutes)
            print(f"\n{headline}: {values} ({minutes:.1f} min)")
            print(f"Run directory: {self.output_dir.resolve()}")
        finish_loggers(self.loggers, metrics, is_global_zero)
        return metrics
