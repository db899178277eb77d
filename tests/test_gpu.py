"""Checks that need a CUDA device (`pytest -m gpu`); skipped elsewhere."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from contrastive.checkpoints import load_pretrained
from contrastive.cli import compose_job
from contrastive.jobs.pretrain import pretrain
from contrastive.losses import contrastive_loss, info_nce, multi_view_info_nce
from contrastive.transforms import BatchedViews, preset
from tests.helpers.formats import cifar10_root, write_fashion

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
    assert cfg.trainer.precision == "bf16-mixed"
    pretrained = load_pretrained(tmp_path / "backbone.pt")
    assert all(torch.isfinite(p).all() for p in pretrained.backbone.parameters())


# --- the blocked InfoNCE against the dense one, at the sizes it exists for ----------------
# Tolerances, float32 on CUDA (full-precision matmuls, TF32 off): the loss to 1e-5 relative,
# each gradient to 1e-4 relative plus 1e-4 of its largest entry; float64 to 1e-9 relative,
# as on the CPU (tests/losses/test_blocked_info_nce.py).
TOLERANCES = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-9, 1e-9)}


@pytest.fixture
def full_precision_matmuls() -> Iterator[None]:
    """TF32 off for the comparison (the default; something earlier may have turned it on)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


def loss_and_grads(
    loss_fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    loss = loss_fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves if leaf.grad is not None]


def assert_same_loss(
    dense: tuple[torch.Tensor, list[torch.Tensor]],
    blocked: tuple[torch.Tensor, list[torch.Tensor]],
    dtype: torch.dtype,
) -> None:
    value_rtol, grad_rtol = TOLERANCES[dtype]
    torch.testing.assert_close(blocked[0], dense[0], rtol=value_rtol, atol=0.0)
    assert len(dense[1]) == len(blocked[1]) > 0
    for expected, actual in zip(dense[1], blocked[1], strict=True):
        scale = expected.abs().max().item()
        torch.testing.assert_close(actual, expected, rtol=grad_rtol, atol=grad_rtol * scale)


@pytest.mark.usefixtures("full_precision_matmuls")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("two_n", [4096, 8192])
def test_blocked_info_nce_equals_dense_on_cuda(two_n: int, dtype: torch.dtype) -> None:
    generator = torch.Generator(device="cuda").manual_seed(two_n)
    z_a, z_b = torch.randn(2, two_n // 2, 128, device="cuda", dtype=dtype, generator=generator)
    dense = loss_and_grads(lambda a, b: info_nce(a, b, 0.1, None), z_a, z_b)
    blocked = loss_and_grads(lambda a, b: info_nce(a, b, 0.1, 512), z_a, z_b)
    assert blocked[0].dtype == dtype
    assert_same_loss(dense, blocked, dtype)


@pytest.mark.usefixtures("full_precision_matmuls")
def test_cross_rank_form_blocked_equals_dense_and_ranks_average_to_the_batch() -> None:
    """One process plays 4 ranks: each rank's anchors against the gathered candidates of all
    ranks (its own at an offset), as InfoNCELoss's gathered path lays them out. Blocked equals
    dense on every rank, and the mean of the ranks' losses is the single-process loss."""
    ranks, num_views, per_rank, dim = 4, 2, 1024, 128  # 2N = 8192 candidates
    generator = torch.Generator(device="cuda").manual_seed(0)
    views = torch.randn(num_views, ranks * per_rank, dim, device="cuda", generator=generator)
    # Gathered candidates: rank 0's (view 0 samples, view 1 samples), then rank 1's, ...
    rank_views = views.view(num_views, ranks, per_rank, dim).transpose(0, 1)  # (R, V, n, D)
    candidates = rank_views.reshape(ranks * num_views * per_rank, dim)  # (R V n, D)
    sample_ids = torch.arange(ranks * per_rank, device="cuda").view(ranks, 1, per_rank)
    candidate_labels = sample_ids.expand(ranks, num_views, per_rank).flatten()  # (R V n,)
    rank_losses = []
    for rank in range(ranks):
        first = rank * num_views * per_rank
        rows = slice(first, first + num_views * per_rank)
        self_index = torch.arange(rows.start, rows.stop, device="cuda")  # (V n,)

        def loss(block: int | None, rows: slice = rows, self_index: torch.Tensor = self_index):
            return lambda candidates: contrastive_loss(
                candidates[rows],
                candidates,
                candidate_labels[rows],
                candidate_labels,
                self_index,
                0.2,
                block,
            )

        dense = loss_and_grads(loss(None), candidates)
        blocked = loss_and_grads(loss(512), candidates)
        assert_same_loss(dense, blocked, torch.float32)
        rank_losses.append(blocked[0])
    whole = multi_view_info_nce(views, 0.2, block_size=None)
    torch.testing.assert_close(torch.stack(rank_losses).mean(), whole, rtol=1e-5, atol=0.0)


def peak_bytes_of(step: Callable[[], None]) -> int:
    """Peak CUDA memory allocated by ``step`` above what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.mark.parametrize("two_n", [4096, 8192])
def test_blocked_info_nce_peak_cuda_memory_is_well_below_dense(two_n: int) -> None:
    z = torch.randn(2, two_n // 2, 128, device="cuda")

    def step(block: int | None) -> Callable[[], None]:
        def run() -> None:
            z_a, z_b = z[0].clone().requires_grad_(True), z[1].clone().requires_grad_(True)
            info_nce(z_a, z_b, 0.1, block).backward()

        return run

    step(None)(), step(512)()  # warm-up: cuBLAS workspaces are not the loss's
    dense, blocked = peak_bytes_of(step(None)), peak_bytes_of(step(512))
    similarities = two_n * two_n * 4  # one (2N, 2N) float32 matrix
    assert dense >= similarities  # the dense path holds at least the whole matrix
    assert blocked < similarities / 4 and blocked < dense / 8, (dense, blocked)


# --- one SimCLR step under bf16 autocast, then short pretraining runs ------------------------
def test_simclr_step_under_bf16_autocast(compose_cfg: Any) -> None:
    cfg = compose_cfg("experiment=cifar10_simclr", "data=synthetic")
    model = instantiate(cfg.method, _convert_="all").cuda()
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device="cuda")
    views = model.views(images, torch.Generator(device="cuda").manual_seed(0))  # (2, B, C, H, W)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        features = model.embed(views.flatten(0, 1))  # (2B, F)
        embeddings = model.projection_head(features).view(2, 64, -1)  # (2, B, D)
        loss = model.loss(embeddings[0], embeddings[1])
    assert features.dtype == torch.bfloat16 and embeddings.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


SHORT = [
    "trainer=gpu",
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def assert_gpu_run(metrics: dict[str, Any], run_dir: Path) -> None:
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    backbone = load_pretrained(run_dir / "backbone.pt").backbone
    assert all(torch.isfinite(p).all() for p in backbone.parameters())


def test_short_compiled_pretraining_on_gpu(compose_cfg: Any, tmp_path: Path) -> None:
    """``method.compile=true`` (inductor, Triton kernels) on CUDA, in bf16-mixed."""
    cfg = compose_cfg(
        *SHORT,
        "data=synthetic",
        "data.source.num_samples=512",
        "data.batch_size=64",
        "backbone.widths=[16,32]",
        "method.compile=true",
    )
    assert_gpu_run(pretrain(cfg), tmp_path)


def write_image_folder(root: Path, classes: list[str], count: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(root / name / f"{i}.png")


@pytest.mark.parametrize("backend", ["batched", "per_sample"])
def test_image_folder_pretraining_on_gpu(compose_cfg: Any, tmp_path: Path, backend: str) -> None:
    """The image-folder source (PNG files, decoded in 2 workers) with views made on the GPU
    (batched) or per sample in the workers, then moved to the GPU."""
    data = tmp_path / "images"
    write_image_folder(data / "train", ["cat", "dog"], 24)
    write_image_folder(data / "val", ["cat", "dog"], 8)
    cfg = compose_cfg(
        *SHORT,
        "data=image_folder",
        f"data.source.root={data}",
        "data.num_classes=2",
        "data.source.image_size=32",
        "data.num_workers=2",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "augment=cifar",
        f"augment.backend={backend}",
    )
    metrics = pretrain(cfg)
    assert_gpu_run(metrics, tmp_path)
    assert metrics["val/knn_num_test_samples"] == 16


def test_in_memory_sources_pretrain_on_gpu(compose_cfg: Any, tmp_path: Path) -> None:
    """Fashion-MNIST's IDX files and CIFAR-10's pickles (small ones written here, in their
    native formats), each a short bf16 run on the GPU."""
    fashion = tmp_path / "fashion"
    for prefix, count in (("train", 256), ("t10k", 64)):
        images = torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8).numpy()
        write_fashion(fashion, images, (np.arange(count) % 10).astype(np.uint8), prefix=prefix)
    cifar = cifar10_root(tmp_path, per_file=64)
    cases = {
        "fashion": [
            "data=fashion_mnist",
            f"data.source.root={fashion}",
            "data.source.verify=false",
        ],
        "cifar": [
            "experiment=cifar10_simclr",
            f"data.source.root={cifar}",
            "data.source.verify=false",
        ],
    }
    for name, overrides in cases.items():
        run_dir = tmp_path / name
        cfg = compose_job(run_dir, "pretrain", *SHORT, *overrides, "data.batch_size=32")
        assert_gpu_run(pretrain(cfg), run_dir)
