"""A learnt temperature (``loss.learnable_temperature``) is trained by every method's
optimiser, without weight decay, and ``train/temperature`` logs its current value."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from contrastive.heads import ProjectionHead
from contrastive.losses import InfoNCELoss
from contrastive.methods import MoCoV2, SimCLR
from contrastive.methods.base import ContrastiveMethod
from contrastive.methods.optimization import with_loss
from contrastive.transforms import preset
from tests.helpers.training import tiny_cnn


def make(method: type[ContrastiveMethod], learnable: bool, **extra: Any) -> ContrastiveMethod:
    torch.manual_seed(0)
    return method(
        backbone=tiny_cnn(),
        projection_head=functools.partial(ProjectionHead, hidden_dim=16, output_dim=8),
        loss=InfoNCELoss(temperature=0.2, learnable_temperature=learnable),
        augment=preset("fashion_mnist"),
        optimizer=functools.partial(torch.optim.SGD, lr=0.5, weight_decay=0.1),
        **extra,
    )


def test_the_optimiser_holds_the_learnt_temperature_in_its_no_decay_group() -> None:
    model = make(SimCLR, learnable=True)
    model._trainer = SimpleNamespace(current_epoch=0, global_rank=0)  # type: ignore[assignment]
    optimizer = model.configure_optimizers()
    decayed, not_decayed = optimizer.param_groups
    log_temperature = model.loss.log_temperature
    assert any(p is log_temperature for p in not_decayed["params"])
    assert not any(p is log_temperature for p in decayed["params"])
    assert not_decayed["weight_decay"] == 0.0
    # the trained modules are the same as with a fixed temperature, plus it; compile is not
    # asked to compile the loss
    fixed = make(SimCLR, learnable=False)
    assert (
        len(list(with_loss(model.trainable(), model.loss).parameters()))
        == len(list(fixed.parameters())) + 1
    )
    assert list(fixed.loss.parameters()) == []
    assert len(list(with_loss(fixed.trainable(), fixed.loss).parameters())) == len(
        list(fixed.trainable().parameters())
    )
    assert all(m is not model.loss for m in model.trainable().children())


def fit_three_steps(model: ContrastiveMethod) -> pl.Trainer:
    images = torch.randint(0, 256, (48, 1, 28, 28), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.zeros(48, dtype=torch.long)), batch_size=16)
    trainer = pl.Trainer(
        max_steps=3,  # MoCo's first step has an empty queue: loss 0, no gradient
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader)
    return trainer


@pytest.mark.parametrize(
    ("method", "extra"), [(SimCLR, {}), (MoCoV2, {"queue_length": 32})], ids=["simclr", "moco_v2"]
)
def test_three_steps_move_the_temperature_and_log_its_current_value(
    method: type[ContrastiveMethod], extra: dict[str, Any]
) -> None:
    model = make(method, learnable=True, **extra)
    trainer = fit_three_steps(model)
    assert float(model.loss.temperature) != pytest.approx(0.2, abs=1e-6)  # it was trained
    logged = float(trainer.callback_metrics["train/temperature"])
    # logged at step 3, after step 2's update: the current value, not the initial one
    assert logged != pytest.approx(0.2, abs=1e-6)
    assert "log_temperature" in {name.split(".")[-1] for name in model.state_dict()}


def test_negative_control_an_optimiser_without_the_loss_leaves_it_where_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "contrastive.methods.optimization.with_loss", lambda trainable, loss: trainable
    )
    model = make(SimCLR, learnable=True)
    trainer = fit_three_steps(model)
    assert float(model.loss.temperature) == pytest.approx(0.2, abs=1e-6)
    assert float(trainer.callback_metrics["train/temperature"]) == pytest.approx(0.2, abs=1e-6)
