"""Progress: Lightning's RichProgressBar in a terminal, plain log lines otherwise."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from contrastive.callbacks import LogProgress, progress_bar


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = (self.layer(batch[0]) - batch[1]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_bar_in_a_terminal_log_lines_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(progress_bar(), RichProgressBar)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a file, a pipe, a SLURM log
    assert isinstance(progress_bar(), LogProgress)


def test_log_progress_writes_readable_lines(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(32, 2), torch.randn(32, 1)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[LogProgress(every_n_steps=3)],
    )
    with caplog.at_level(logging.INFO, logger="contrastive.callbacks.progress"):
        trainer.fit(Tiny(), train_dataloaders=loader)
    lines = [r.getMessage() for r in caplog.records if r.name == "contrastive.callbacks.progress"]
    steps = [line.split(" (")[0] for line in lines]
    # every 3rd step of each 8-step epoch, and the epoch's last
    assert steps == [f"epoch {e}/2 step {s}/8" for e in (1, 2) for s in (3, 6, 8)], lines
    assert all("train/loss=" in line and "\x1b" not in line for line in lines)


def test_log_progress_refuses_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        LogProgress(every_n_steps=0)
