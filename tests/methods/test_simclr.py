"""The SimCLR module's own logic (the full job: tests/jobs/test_pretrain.py)."""

from __future__ import annotations

import functools

import torch

from contrastive.backbones import build_backbone
from contrastive.heads import ProjectionHead
from contrastive.losses import InfoNCELoss
from contrastive.methods import SimCLR
from contrastive.transforms import preset


def make_model(channels_last: bool) -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(
        backbone=build_backbone("small_cnn", in_channels=1, widths=[8, 16], pool_size=2),
        projection_head=functools.partial(ProjectionHead, hidden_dim=32, output_dim=16),
        loss=InfoNCELoss(temperature=0.2),
        augment=preset("fashion_mnist"),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        channels_last=channels_last,
    )


def test_channels_last_computes_the_same_features() -> None:
    images = torch.randn(8, 1, 28, 28)
    dense, channels_last = make_model(False).eval(), make_model(True).eval()
    torch.testing.assert_close(channels_last.embed(images), dense.embed(images))
    assert channels_last.backbone.features[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )


def test_eval_images_are_scaled_and_normalised_like_the_views() -> None:
    model = make_model(False)
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    mean, std = model.recipe.channel_stats()
    expected = (1.0 - mean[0]) / std[0]
    torch.testing.assert_close(
        model.prepare_eval_images(images), torch.full((2, 1, 28, 28), expected)
    )


def test_eval_images_are_resized_to_the_recipe() -> None:
    model = make_model(False)
    out = model.prepare_eval_images(torch.zeros(3, 1, 40, 40, dtype=torch.uint8))
    assert out.shape == (3, 1, 28, 28)


def attach_fake_trainer(model: SimCLR, **attributes: object) -> None:
    from types import SimpleNamespace

    model._trainer = SimpleNamespace(current_epoch=0, **attributes)  # type: ignore[assignment]


def test_each_rank_draws_its_own_augmentations() -> None:
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    views = {}
    for rank in (0, 1):
        model = make_model(False)
        attach_fake_trainer(model, global_rank=rank)
        views[rank] = model.views(images, model.view_generator(images.device))
    again = make_model(False)
    attach_fake_trainer(again, global_rank=1)
    assert not torch.equal(views[0], views[1])  # ranks differ
    torch.testing.assert_close(again.views(images, again.view_generator(images.device)), views[1])


def test_learning_rate_scales_with_the_global_batch() -> None:
    from types import SimpleNamespace

    rates = {}
    for rule in ("none", "linear", "sqrt"):
        model = make_model(False)
        model.lr_scaling = rule
        attach_fake_trainer(
            model,
            world_size=4,
            accumulate_grad_batches=2,
            datamodule=SimpleNamespace(batch_size=128),
            global_rank=0,
        )
        optimizer = model.configure_optimizers()
        rates[rule] = {group["lr"] for group in optimizer.param_groups}
    # global batch = 128 x 4 processes x 2 accumulation = 1024 = 4 x 256
    assert rates == {"none": {1e-3}, "linear": {4e-3}, "sqrt": {2e-3}}
