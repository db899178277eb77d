"""Pretraining throughput (views/second, median over steady-state steps) and peak memory.

Runs the real pipeline (Hydra config -> contrastive.jobs.pretrain.build -> Lightning fit) on
synthetic images of each case's shape, so it needs no dataset. Prints a markdown table.

    python scripts/bench_throughput.py                 # CPU cases
    python scripts/bench_throughput.py --device gpu    # GPU cases (bf16-mixed, channels_last, compile)
"""

from __future__ import annotations

import argparse
import statistics

import torch
from omegaconf import open_dict

from contrastive.callbacks import ViewThroughput
from contrastive.cli import compose_job
from contrastive.jobs.pretrain import build

COMMON = [
    "logger=none",
    "callbacks=minimal",
    "~callbacks.last_checkpoint",
    "trainer.enable_checkpointing=false",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data=synthetic",
]
FMNIST = ["data.source.image_size=28", "data.source.channels=1"]
CIFAR = [
    "experiment=cifar10_simclr",
    "data=synthetic",
    "data.source.image_size=32",
    "data.source.channels=3",
]
CASES: dict[str, dict[str, list[str]]] = {
    "cpu": {
        "fmnist small_cnn b256 fp32": [*FMNIST, "data.batch_size=256"],
        "fmnist small_cnn b256 fp32 channels_last": [
            *FMNIST,
            "data.batch_size=256",
            "method.channels_last=true",
        ],
    },
    "gpu": {
        "fmnist small_cnn b256 fp32": [
            *FMNIST,
            "data.batch_size=256",
            "trainer=gpu",
            "trainer.precision=32-true",
        ],
        "cifar resnet18-small b512 fp32": [*CIFAR, "trainer=gpu", "trainer.precision=32-true"],
        "cifar resnet18-small b512 bf16": [*CIFAR, "trainer=gpu"],
        "cifar resnet18-small b512 bf16 channels_last": [
            *CIFAR,
            "trainer=gpu",
            "method.channels_last=true",
        ],
        "cifar resnet18-small b512 bf16 channels_last compile": [
            *CIFAR,
            "trainer=gpu",
            "method.channels_last=true",
            "method.compile=true",
        ],
    },
}


def measure(overrides: list[str], steps: int, warmup: int, output_dir: str) -> tuple[float, float]:
    cfg = compose_job(output_dir, "pretrain", *COMMON, *overrides)
    with open_dict(cfg):
        cfg.data.source.num_samples = cfg.data.batch_size * (steps + warmup)
        cfg.trainer.max_epochs = 1
    datamodule, model, callbacks, trainer = build(cfg)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=datamodule)
    meter = next(c for c in callbacks if isinstance(c, ViewThroughput))
    rates = meter.rates[warmup:]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    return statistics.median(rates), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=sorted(CASES), default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--output-dir", default="/tmp/contrastive-bench")
    args = parser.parse_args()
    name = (
        torch.cuda.get_device_name()
        if args.device == "gpu"
        else f"CPU x{torch.get_num_threads()} threads"
    )
    print(
        f"device: {name}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup}\n"
    )
    print("| case | views/s (median) | peak GPU memory (GiB) |")
    print("| --- | --- | --- |")
    for case, overrides in CASES[args.device].items():
        rate, peak = measure(overrides, args.steps, args.warmup, args.output_dir)
        print(f"| {case} | {rate:,.0f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
