"""End-to-end SimCLR pretraining throughput on Fashion-MNIST (views/second): this
framework's job against lightly's Lightning SimCLR recipe, in one run, on the same cores.

Both sides train the same backbone (our ``small_cnn``, 32-64-128, 2048-d features), a
2048-512-128 projection head with batch norm (ours: ``ProjectionHead``; lightly:
``SimCLRProjectionHead``), NT-Xent at T=0.2, AdamW (lr 2e-3, weight decay 1e-4), batch 256
of the real Fashion-MNIST training set, and the same two-view recipe (our ``fashion_mnist``
preset: crops of 65-100%, flips, brightness/contrast jitter with p=0.8).

- **lightly**: lightly's recipe as its SimCLR example writes it: ``SimCLRTransform`` on PIL
  images in a DataLoader with ``--workers`` workers, each view through the backbone in its
  own forward pass, ``NTXentLoss``; Lightning with no logger and no checkpointing.
- **ours**: ``scripts/pretrain.py``'s job as composed from ``conf/`` (the default
  experiment, so batched views made in the LightningModule, channels-last, and every
  default callback: online probe, health metrics, guards), with ``logger=none``; the
  ``+`` rows add one throughput option each.

Every case runs in its own process, ``--steps`` optimiser steps; the rate is taken from the
step-end timestamps after the first ``--warmup`` steps (so start-up, worker spawn and
compilation are excluded). Cases run round-robin, ``--repeats`` times; the table gives the
median and the ratio to lightly. Needs the bench extra (``pip install -e '.[bench]'``) and
the dataset (``make data``).

``--device gpu`` runs every case on one GPU (ours with ``trainer=gpu``, in fp32 unless the case
says otherwise); ``--synthetic`` trains ours on synthetic Fashion-MNIST-shaped images (28 px,
one channel) instead of the dataset, for machines without it (lightly's case needs the dataset).

    python scripts/bench_train.py
    python scripts/bench_train.py --cases lightly ours --repeats 5
    python scripts/bench_train.py --device gpu --synthetic --cases ours "ours + bf16-mixed"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATCH = 256
CASES: dict[str, list[str]] = {
    "lightly": [],
    "ours": [],
    "ours + bf16-mixed": ["trainer.precision=bf16-mixed"],
    "ours + torch.compile": ["method.compile=true"],
}


def step_timer() -> Any:
    import pytorch_lightning as pl

    class StepTimes(pl.Callback):
        """perf_counter() at the end of every training step."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter())

    return StepTimes()


def views_per_second(times: list[float], warmup: int) -> float:
    steady = times[warmup:]
    return 2 * BATCH * (len(steady) - 1) / (steady[-1] - steady[0])


GPU = ["trainer=gpu", "trainer.precision=32-true"]


def synthetic(steps: int) -> list[str]:
    return [
        "data=synthetic",
        "data.source.image_size=28",
        "data.source.channels=1",
        f"data.source.num_samples={BATCH * (steps + 1)}",
    ]


def run_ours(overrides: list[str], steps: int, warmup: int, run_dir: str) -> float:
    from contrastive.cli import compose_job
    from contrastive.jobs.pretrain import build

    overrides = [
        "logger=none",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.limit_val_batches=0",
        *overrides,
    ]
    cfg = compose_job(run_dir, "pretrain", *overrides)
    datamodule, model, _, trainer = build(cfg)
    timer = step_timer()
    trainer.callbacks.append(timer)
    trainer.fit(model, datamodule=datamodule)
    return views_per_second(timer.times, warmup)


def lightly_loader(workers: int, batch: int = BATCH) -> Any:
    """Fashion-MNIST's training set as lightly's examples feed it: PIL images through
    ``SimCLRTransform`` (our ``fashion_mnist`` recipe) in DataLoader workers, two views."""
    import torch
    from bench_augment import lightly_transform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from contrastive.data.sources import load_fashion_mnist
    from contrastive.transforms import preset

    transform = lightly_transform(preset("fashion_mnist"))  # (2, C, H, W) per image
    train = load_fashion_mnist(os.environ.get("CONTRASTIVE_DATA_ROOT", ROOT / "data"), train=True)

    class FashionMNIST(Dataset[Any]):
        def __len__(self) -> int:
            return len(train)

        def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
            image = Image.fromarray(train.images[index, 0].numpy())
            return list(transform(image)), int(train.labels[index])

    return DataLoader(
        FashionMNIST(),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def run_lightly(steps: int, warmup: int, workers: int, accelerator: str = "cpu") -> float:
    import pytorch_lightning as pl
    import torch
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    from contrastive.backbones import build_backbone, feature_dim

    class LightlySimCLR(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = build_backbone(
                "small_cnn", in_channels=1, widths=[32, 64, 128], pool_size=4
            )
            self.projection_head = SimCLRProjectionHead(feature_dim(self.backbone), 512, 128)
            self.criterion = NTXentLoss(temperature=0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.projection_head(self.backbone(x))

        def training_step(self, batch: Any, batch_index: int) -> torch.Tensor:
            (x0, x1), _ = batch
            return self.criterion(self.forward(x0), self.forward(x1))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=2e-3, weight_decay=1e-4)

    loader = lightly_loader(workers)
    timer = step_timer()
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    pl.seed_everything(0)
    trainer.fit(LightlySimCLR(), train_dataloaders=loader)
    return views_per_second(timer.times, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--synthetic", action="store_true", help="ours on synthetic images")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case
    args = parser.parse_args()
    if args.steps < args.warmup + 2:
        parser.error(f"--steps must exceed --warmup by at least 2, got {args.steps}")
    if args.synthetic and "lightly" in ([args.case] if args.case else args.cases):
        parser.error("--synthetic is for ours only: lightly's case reads the dataset")

    if args.case:
        if args.case == "lightly":
            rate = run_lightly(args.steps, args.warmup, args.workers, args.device)
        else:
            overrides = [*(GPU if args.device == "gpu" else [])]
            overrides += synthetic(args.steps) if args.synthetic else []
            with tempfile.TemporaryDirectory() as run_dir:
                rate = run_ours([*overrides, *CASES[args.case]], args.steps, args.warmup, run_dir)
        print(json.dumps({"views_per_sec": rate}))
        return

    rates: dict[str, list[float]] = {case: [] for case in args.cases}
    for repeat in range(args.repeats):
        for case in args.cases:
            command = [sys.executable, __file__, "--case", case, "--steps", str(args.steps)]
            command += ["--warmup", str(args.warmup), "--workers", str(args.workers)]
            command += ["--device", args.device, *(["--synthetic"] if args.synthetic else [])]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                sys.exit(f"case {case!r} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            rates[case].append(json.loads(lines[-1])["views_per_sec"])
            print(f"repeat {repeat}: {case}: {rates[case][-1]:,.0f} views/s", file=sys.stderr)

    if args.device == "gpu":
        import torch

        where = f"{torch.cuda.get_device_name()} (torch {torch.__version__}), "
    else:
        where = f"CPU ({os.cpu_count()} cores), "
    data = "synthetic 28 px images" if args.synthetic else "Fashion-MNIST"
    print(
        f"\n{data}, batch {BATCH}, 2 views, {where}"
        f"{args.workers} DataLoader workers for lightly; steps {args.warmup}-{args.steps} of "
        f"each run, median of {args.repeats} runs\n"
    )
    print("| pipeline | views/s (median) | runs | vs lightly |")
    print("| --- | --- | --- | --- |")
    lightly = statistics.median(rates["lightly"]) if "lightly" in rates else None
    for case, values in rates.items():
        median = statistics.median(values)
        ratio = f"{median / lightly:.2f}x" if lightly else "-"
        runs = ", ".join(f"{value:,.0f}" for value in values)
        print(f"| {case} | {median:,.0f} | {runs} | {ratio} |")


if __name__ == "__main__":
    main()
