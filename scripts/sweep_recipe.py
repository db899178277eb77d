"""Sweep SimCLR recipes on Fashion-MNIST at a fixed budget of views (torch only).

Used to choose the default demo recipe: each configuration trains for the same number of
epochs with an online linear probe, then reports kNN (k=200, T=0.1, cosine, full
60k bank / 10k test) and online-probe top-1. Runs anywhere torch runs; on a GPU a whole
sweep takes minutes. ``python scripts/sweep_recipe.py --epochs 4 --root data``
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import torch.nn.functional as F

from contrastive.backbones import SmallCNN
from contrastive.data.sources import load_fashion_mnist
from contrastive.heads import LinearHead, ProjectionHead
from contrastive.metrics import knn_predict
from contrastive.transforms import BatchedViews, normalize, preset, to_float


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2N, D)
    n = z_a.shape[0]
    logits = z @ z.T / temperature  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def run(cfg: dict, train, test, epochs: int, device: str) -> dict:
    torch.manual_seed(cfg.get("seed", 0))
    recipe = preset("fashion_mnist", crop_scale=(cfg["crop_min"], 1.0))
    views = BatchedViews(recipe)
    net = SmallCNN(1, widths=cfg["widths"], pool_size=cfg["pool"]).to(device)
    head = ProjectionHead(net.feature_dim, 512, 128).to(device)
    probe = LinearHead(net.feature_dim, 10, batch_norm=True).to(device)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
    probe_opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    images, labels = train.images.to(device), train.labels.to(device)
    batch = cfg["batch"]
    steps_per_epoch = len(labels) // batch
    total, warmup = steps_per_epoch * epochs, steps_per_epoch // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5
            * (1 + torch.cos(torch.tensor(torch.pi * (s - warmup) / (total - warmup))).item())
        ),
    )
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(labels), device=device)
        for step in range(steps_per_epoch):
            idx = order[step * batch : (step + 1) * batch]
            v = views(images[idx])  # (2, B, 1, 28, 28)
            feats = net(v.flatten(0, 1))
            z = head(feats).view(2, batch, -1)
            loss = nt_xent(z[0], z[1], cfg["temperature"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            probe_loss = F.cross_entropy(probe(feats.detach()[:batch]), labels[idx])
            probe_opt.zero_grad(set_to_none=True)
            probe_loss.backward()
            probe_opt.step()
    seconds = time.perf_counter() - started
    net.eval()
    probe.eval()
    mean, std = recipe.channel_stats()

    @torch.no_grad()
    def embed(x: torch.Tensor) -> torch.Tensor:
        out = [
            net(normalize(to_float(x[i : i + 2048].to(device)), mean, std))
            for i in range(0, len(x), 2048)
        ]
        return torch.cat(out)

    bank, query = embed(train.images), embed(test.images)
    test_labels = test.labels.to(device)
    knn = (knn_predict(query, bank, labels, 10).argmax(1) == test_labels).float().mean().item()
    with torch.no_grad():
        online = (probe(query).argmax(1) == test_labels).float().mean().item()
    return {
        **cfg,
        "knn_top1": round(knn, 4),
        "online_top1": round(online, 4),
        "seconds": round(seconds, 1),
        "final_loss": round(loss.item(), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="data")
    parser.add_argument("--epochs", type=int, nargs="+", default=[4])
    parser.add_argument("--grid", choices=["default", "spatial"], default="default")
    parser.add_argument("--limit", type=int, default=None, help="use the first N train images")
    parser.add_argument("--only", type=int, default=None, help="run only the first N variants")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, test = load_fashion_mnist(args.root, True), load_fashion_mnist(args.root, False)
    if args.limit:
        train = type(train)(train.images[: args.limit], train.labels[: args.limit], train.classes)
    base = dict(widths=(32, 64, 128), pool=1, crop_min=0.2, temperature=0.2, lr=2e-3, batch=256)
    variants = [
        {},
        {"pool": 2},
        {"pool": 3},
        {"pool": 2, "crop_min": 0.35},
        {"pool": 2, "crop_min": 0.5},
        {"pool": 2, "temperature": 0.1},
        {"pool": 2, "temperature": 0.5},
        {"pool": 2, "lr": 4e-3},
        {"pool": 2, "batch": 512},
        {"pool": 2, "widths": (32, 64, 128, 256)},
        {"pool": 1, "widths": (32, 64, 128, 256)},
        {"pool": 2, "widths": (16, 32, 64)},
    ]
    if args.grid == "spatial":  # second round: finer feature grids with milder crops
        variants = [
            {"pool": 3, "crop_min": 0.5},
            {"pool": 4, "crop_min": 0.5},
            {"pool": 7, "crop_min": 0.5},
            {"pool": 4, "crop_min": 0.35},
            {"pool": 7, "crop_min": 0.35},
            {"pool": 4, "crop_min": 0.5, "temperature": 0.1},
            {"pool": 4, "crop_min": 0.5, "widths": (32, 64, 96)},
            {"pool": 4, "crop_min": 0.65},
        ]
    print(f"device={device} torch={torch.__version__}", flush=True)
    for epochs, variant in itertools.product(args.epochs, variants[: args.only]):
        result = run({**base, **variant}, train, test, epochs, device)
        print(json.dumps({"epochs": epochs, **result}), flush=True)


if __name__ == "__main__":
    main()
