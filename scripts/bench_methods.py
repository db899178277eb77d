"""The methods table: every pretraining method and loss option on Fashion-MNIST at the same
wall-clock budget, scored by kNN and by the offline linear probe, with lightly's SimCLR and
MoCo as peer rows. Prints a markdown table and writes it into ``docs/BENCHMARKS.md``
(between ``<!-- methods table -->`` markers, with the commit and the command).

Protocol, per row, each job in its own process on the otherwise idle machine:

1. a 30-step timing run (no scoring) measures the row's optimiser steps per second;
2. pretraining for ``budget x steps/s`` steps (the LR schedule spans exactly them; no
   scoring during training, ``trainer.max_time`` as a guard);
3. scores of the final weights: the kNN monitor (k=200, T=0.1, cosine, the 60k training
   images as the bank, on the 10k test images: ``val/knn_top1``), the online probe trained
   beside the run (``val/online_top1``, detached features), and the offline linear probe
   (``scripts/linear_probe.py`` with its defaults on the frozen backbone: ``probe/test_top1``).

Every row trains the default experiment's small CNN, batch, optimiser and augmentation; only
the method, loss or view options differ. The peer rows are lightly 1.6's SimCLR and MoCo as
its examples write them (``SimCLRTransform`` in DataLoader workers, lightly's heads and
losses, lightly's ``MemoryBankModule`` queue and ``update_momentum`` for MoCo, AdamW at our
learning rate without a schedule), on the same backbone, for the same wall-clock budget
(``trainer.max_time``), scored by the same kNN and probe jobs on the saved backbone.

    python scripts/bench_methods.py --budget-s 200                # every row, seed 0
    python scripts/bench_methods.py --rows simclr moco_v2_b64 --seeds 0 1 2
    python scripts/bench_methods.py --rows simclr --budget-s 20 --no-write   # a smoke run
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
DOC = ROOT / "docs" / "BENCHMARKS.md"
MARK_BEGIN, MARK_END = "<!-- methods table -->", "<!-- /methods table -->"
B64 = ["data.batch_size=64"]
ROWS: dict[str, list[str]] = {
    "simclr": [],
    "moco_v2": ["method=moco_v2"],
    "moco_v3": ["method=moco_v3"],
    "nnclr": ["method=nnclr"],
    "supcon": ["method=supcon"],
    "dcl": ["loss=dcl", "loss.temperature=0.2"],
    "dclw": ["loss=dclw", "loss.temperature=0.2"],
    "simclr_multicrop": ["augment.local_views=6", "augment.local_size=14"],
    "simclr_b64": B64,
    "moco_v2_b64": ["method=moco_v2", *B64],
    "lightly_simclr": [],
    "lightly_moco": [],
}
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def pretrain(run_dir: Path, overrides: list[str], timeout: float) -> dict[str, Any]:
    script = str(ROOT / "scripts" / "pretrain.py")
    run([sys.executable, script, *overrides, *QUIET, f"hydra.run.dir={run_dir}"], timeout)
    return json.loads((run_dir / "metrics.json").read_text())  # type: ignore[no-any-return]


def offline_probe(run_dir: Path, probe_dir: Path) -> float:
    script = str(ROOT / "scripts" / "linear_probe.py")
    command = [sys.executable, script, f"pretrained={run_dir}", "logger=none", *QUIET]
    run([*command, f"hydra.run.dir={probe_dir}"], 3600)
    return float(json.loads((probe_dir / "metrics.json").read_text())["probe/test_top1"])


def knn_job(run_dir: Path, knn_dir: Path) -> float:
    script = str(ROOT / "scripts" / "knn_eval.py")
    command = [sys.executable, script, f"pretrained={run_dir}", "logger=none"]
    run([*command, f"hydra.run.dir={knn_dir}"], 3600)
    return float(json.loads((knn_dir / "metrics.json").read_text())["knn/test_top1"])


def ours(name: str, seed: int, budget: float, work: Path) -> dict[str, Any]:
    overrides = [*ROWS[name], f"seed={seed}", "logger=none"]
    timing = pretrain(
        work / "timing",
        [*overrides, "trainer.max_steps=30", "~callbacks.knn", "~callbacks.online_probe"],
        600,
    )
    batch = 64 if "data.batch_size=64" in overrides else 256
    views_per_step = batch * (2 + (6 if "augment.local_views=6" in overrides else 0))
    steps_per_sec = timing["train/views_per_sec"] / views_per_step
    steps = max(1, int(budget * steps_per_sec))
    guard = f"00:00:{int(budget * 1.5) // 60:02d}:{int(budget * 1.5) % 60:02d}"
    started = time.perf_counter()
    metrics = pretrain(
        work / "run",
        [
            *overrides,
            f"trainer.max_steps={steps}",
            "trainer.max_epochs=1000",
            "trainer.check_val_every_n_epoch=1000",  # scored once, after training
            f"trainer.max_time={guard}",
        ],
        budget * 3 + 900,
    )
    return {
        "steps": steps,
        "epochs": metrics["train/epochs"],
        "views_per_sec": metrics.get("train/views_per_sec"),
        "train_s": time.perf_counter() - started,
        "knn": metrics["val/knn_top1"],
        "online": metrics.get("val/online_top1"),
        "probe": offline_probe(work / "run", work / "probe"),
    }


def lightly_row(name: str, seed: int, budget: float, work: Path) -> dict[str, Any]:
    """lightly's recipe in a child process (``--peer``), then our kNN and probe jobs."""
    run_dir = work / "run"
    started = time.perf_counter()
    command = [sys.executable, __file__, "--peer", name, "--seeds", str(seed)]
    done = run([*command, "--budget-s", str(budget), "--peer-dir", str(run_dir)], budget * 3 + 600)
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        **peer,
        "train_s": time.perf_counter() - started,
        "knn": knn_job(run_dir, work / "knn"),
        "online": None,
        "probe": offline_probe(run_dir, work / "probe"),
    }


def run_peer(name: str, seed: int, budget: float, run_dir: Path) -> dict[str, Any]:
    """lightly's SimCLR / MoCo for ``budget`` seconds; ``backbone.pt`` in ``run_dir``."""
    import copy

    import pytorch_lightning as pl
    import torch
    from bench_train import lightly_loader
    from lightly.loss import NTXentLoss
    from lightly.models.modules import MoCoProjectionHead, SimCLRProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    from contrastive.backbones import build_backbone, feature_dim
    from contrastive.checkpoints import save_backbone
    from contrastive.transforms import preset

    recipe = preset("fashion_mnist")

    class Peer(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = build_backbone(
                "small_cnn", in_channels=1, widths=[32, 64, 128], pool_size=4
            )
            width = feature_dim(self.backbone)
            if name == "lightly_simclr":
                self.projection_head = SimCLRProjectionHead(width, 512, 128)
                self.criterion = NTXentLoss(temperature=0.2)
            else:  # lightly's MoCo example: momentum 0.99 -> 1 (cosine), a 4096 bank
                self.projection_head = MoCoProjectionHead(width, 512, 128)
                self.backbone_momentum = copy.deepcopy(self.backbone)
                self.head_momentum = copy.deepcopy(self.projection_head)
                deactivate_requires_grad(self.backbone_momentum)
                deactivate_requires_grad(self.head_momentum)
                self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))

        def training_step(self, batch: Any, batch_index: int) -> torch.Tensor:
            (x0, x1), _ = batch
            query = self.projection_head(self.backbone(x0))
            if name == "lightly_simclr":
                return self.criterion(query, self.projection_head(self.backbone(x1)))  # type: ignore[no-any-return]
            update_momentum(self.backbone, self.backbone_momentum, m=0.99)
            update_momentum(self.projection_head, self.head_momentum, m=0.99)
            with torch.no_grad():
                key = self.head_momentum(self.backbone_momentum(x1))
            return self.criterion(query, key)  # type: ignore[no-any-return]

        def configure_optimizers(self) -> torch.optim.Optimizer:
            trained = [*self.backbone.parameters(), *self.projection_head.parameters()]
            return torch.optim.AdamW(trained, lr=2e-3, weight_decay=1e-4)

    loader = lightly_loader(os.cpu_count() or 1)
    model = Peer()
    steps: list[float] = []

    class Count(pl.Callback):
        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            steps.append(time.perf_counter())

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_time={"seconds": budget},
        max_epochs=1000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Count()],
    )
    pl.seed_everything(seed)
    trainer.fit(model, train_dataloaders=loader)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_backbone(
        model.backbone,
        str(run_dir / "backbone.pt"),
        recipe=recipe.__dict__,
        dataset="fashion_mnist",
        num_classes=10,
    )
    rate = 2 * 256 * (len(steps) - 1) / (steps[-1] - steps[0]) if len(steps) > 1 else None
    return {"steps": len(steps), "epochs": trainer.current_epoch, "views_per_sec": rate}


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return done.stdout.decode().strip() or "unknown"


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(results: dict[str, list[dict[str, Any]]], budget: float, command: str) -> str:
    lines = [
        f"Commit {commit()}, `{command}`: {budget:.0f} s of pretraining per row on this machine "
        f"({os.cpu_count()} cores); kNN k=200, T=0.1 on the test set; online probe beside "
        "the run; offline probe: `scripts/linear_probe.py` defaults on the frozen backbone. "
        "Mean ± std over the seeds where more than one.",
        "",
        "| row | seeds | steps | epochs | views/s | kNN top-1 | online probe | offline probe | pretrain job s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results.items():
        online = [r["online"] for r in runs if r["online"] is not None]
        rate = [r["views_per_sec"] for r in runs if r["views_per_sec"]]
        lines.append(
            f"| {name} | {len(runs)} | {runs[0]['steps']} | {runs[0]['epochs']} | "
            f"{statistics.mean(rate):,.0f} | {spread([r['knn'] for r in runs])} | "
            f"{spread(online) if online else 'n/a'} | {spread([r['probe'] for r in runs])} | "
            f"{statistics.mean(r['train_s'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def write(markdown: str) -> None:
    text = DOC.read_text()
    block = f"{MARK_BEGIN}\n{markdown}\n{MARK_END}"
    if MARK_BEGIN in text:
        head, rest = text.split(MARK_BEGIN, 1)
        text = head + block + rest.split(MARK_END, 1)[1]
    else:
        text += f"\n## Methods on Fashion-MNIST at one wall-clock budget\n\n{block}\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--budget-s", type=float, default=200.0, help="pretraining per row")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # internal: one lightly run
    parser.add_argument("--peer-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        sys.path.insert(0, str(ROOT / "scripts"))
        print(json.dumps(run_peer(args.peer, args.seeds[0], args.budget_s, Path(args.peer_dir))))
        return

    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.rows:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as work:
                row = lightly_row if name.startswith("lightly") else ours
                results.setdefault(name, []).append(row(name, seed, args.budget_s, Path(work)))
            done = results[name][-1]
            print(
                f"{name} seed {seed}: kNN {done['knn']:.4f}, probe {done['probe']:.4f}, "
                f"{done['train_s']:.0f} s",
                file=sys.stderr,
            )
    command = "python scripts/bench_methods.py " + " ".join(sys.argv[1:])
    markdown = table(results, args.budget_s, command.strip())
    print(markdown)
    if not args.no_write:
        write(markdown)


if __name__ == "__main__":
    main()
