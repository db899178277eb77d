"""Checks that need a CUDA device (`pytest -m gpu`); skipped elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contrastive.jobs.pretrain import pretrain
from contrastive.losses import info_nce, multi_view_info_nce
from contrastive.transforms import BatchedViews, preset

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("temperature", [0.1, 1e-3])
def test_info_nce_under_cuda_autocast(dtype: torch.dtype, temperature: float) -> None:
    torch.manual_seed(0)
    proj = torch.nn.Linear(64, 32).cuda()
    x_a, x_b = torch.randn(256, 64, device="cuda"), torch.randn(256, 64, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        z_a, z_b = proj(x_a), proj(x_b)
        loss = info_nce(z_a, z_b, temperature)
    # The loss itself runs in float32 on the (rounded) low-precision embeddings.
    reference = info_nce(z_a.detach().float(), z_b.detach().float(), temperature)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    assert proj.weight.grad is not None and torch.isfinite(proj.weight.grad).all()


def test_supcon_same_on_cpu_and_gpu() -> None:
    views = torch.randn(3, 128, 16, dtype=torch.float64)
    labels = torch.arange(128) % 10
    cpu = multi_view_info_nce(views, 0.2, labels)
    gpu = multi_view_info_nce(views.cuda(), 0.2, labels.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-10)


def test_batched_views_on_the_gpu_draw_per_sample() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    images[1:] = images[0]  # 64 copies of one image
    views = BatchedViews(preset("cifar"))(images)
    assert views.device.type == "cuda" and views.shape == (2, 64, 3, 32, 32)
    flat = views.flatten(2)  # (V, B, C*H*W)
    assert torch.cdist(flat[0], flat[0]).fill_diagonal_(1).min() > 0  # all differ


def test_short_pretraining_on_gpu_in_bf16(compose_cfg: Any, tmp_path: Path) -> None:
    cfg = compose_cfg(
        "trainer=gpu",
        "data=synthetic",
        "data.source.num_samples=512",
        "data.batch_size=64",
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
    )
    metrics = pretrain(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    written = json.loads((tmp_path / "metrics.json").read_text())
    # The synthetic classes are learnable: kNN on the features beats chance (10%).
    assert written["val/knn_top1"] > 0.3
