"""The raw-pixel linear baseline: the same linear head as the probe, on pixels.

``python scripts/raw_pixel_baseline.py [--dataset fashion_mnist] [--epochs 30]`` prints
the test top-1 of a linear classifier (affine-free BatchNorm + linear, AdamW 1e-3 with
cosine decay, batch 512) trained on the flattened, normalised training images.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from contrastive.data.sources import load_arrays
from contrastive.methods.linear_probe import LinearProbe, evaluate_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default="data")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    pl.seed_everything(0)
    train = load_arrays(args.dataset, args.root, "train")
    test = load_arrays(args.dataset, args.root, "test")
    mean, std = train.images.float().mean() / 255, train.images.float().std() / 255

    def pixels(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - mean) / std).flatten(1)  # (N, C*H*W)

    num_classes = len(train.classes)
    model = LinearProbe(pixels(train.images[:1]).shape[1], num_classes, max_epochs=args.epochs)
    loader = DataLoader(TensorDataset(pixels(train.images), train.labels), 512, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=loader)
    model.eval()
    with torch.no_grad():
        outputs = model(pixels(test.images))
    top1 = evaluate_outputs(outputs, test.labels, "softmax")["probe/test_top1"].item()
    print(f"raw-pixel linear baseline on {args.dataset}: test top-1 {top1:.4f}")


if __name__ == "__main__":
    main()
