"""The project's matplotlib figures, as PNG files: pure functions of tensors and numbers.

- :func:`draw_similarities`: histograms of the positive and negative cosine similarities of a
  batch (``MediaLogger``'s ``similarities_epoch<E>.png``);
- :func:`draw_embedding_map`: 2-D coordinates coloured by class (``embedding_map_epoch<E>.png``);
- :func:`draw_curves`: loss and accuracy curves of one or more runs (``curves.png`` of a run
  and of ``scripts/report.py``);
- :func:`save_confusion_png`: the linear probe's row-normalised confusion matrix.

matplotlib is imported on first use, with the non-interactive Agg backend. Nothing here knows
about Lightning: the callbacks in :mod:`contrastive.callbacks.media` and the jobs gather the
data, choose the paths and publish the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_similarities(positives: Tensor, negatives: Tensor, title: str, path: Path) -> Path:
    """Density histograms (80 bins over [-1, 1]) of ``negatives`` and ``positives``, 1-D CPU
    tensors of cosine similarities; returns ``path``."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    bins = torch.linspace(-1, 1, 81).numpy()
    axes.hist(negatives.numpy(), bins=bins, density=True, alpha=0.6, label="negatives")
    axes.hist(positives.numpy(), bins=bins, density=True, alpha=0.6, label="positives")
    axes.set_xlabel("cosine similarity of projected embeddings")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def draw_embedding_map(
    coords: Tensor, labels: Tensor, names: Sequence[str], title: str, path: Path
) -> Path:
    """Scatter of ``coords`` (N, 2) coloured by ``labels`` (N,), one legend entry per class
    present (``names[label]``, or the label itself past the end of ``names``); returns
    ``path``."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for index in labels.unique().tolist():
        mask = labels == index
        axes.scatter(
            *coords[mask].T.numpy(),
            s=4,
            color=colours(index % colours.N),
            label=names[index] if index < len(names) else str(index),
        )
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(markerscale=3, fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def draw_curves(runs: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """Loss against step and accuracies against epoch, one line per run; returns ``path``."""
    plt = _pyplot()
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in runs.items():
        losses = [(r["step"], r["train/loss"]) for r in history if "train/loss" in r]
        if losses:
            steps, values = zip(*losses, strict=True)
            window = max(1, len(values) // 50)  # smoothed: a running mean over ~2% of steps
            smooth = (
                torch.tensor(values).unfold(0, window, 1).mean(dim=1)
                if len(values) >= window
                else torch.tensor(values)
            )
            loss_axes.plot(steps[window - 1 :], smooth.numpy(), label=name)
        for key, style in (("val/knn_top1", "-o"), ("val/online_top1", "--s")):
            points = [(r["epoch"] + 1, r[key]) for r in history if key in r]
            if points:
                epochs, values = zip(*points, strict=True)
                accuracy_axes.plot(epochs, values, style, label=f"{name}: {key}")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("train/loss")
    loss_axes.set_title("InfoNCE loss")
    accuracy_axes.set_xlabel("epoch")
    accuracy_axes.set_ylabel("top-1")
    accuracy_axes.set_title("validation accuracy")
    for axes in (loss_axes, accuracy_axes):
        if axes.has_data():
            axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def save_confusion_png(confusion: Tensor, classes: tuple[str, ...], path: Path) -> None:
    """The (K, K) ``confusion`` counts (rows: true class, columns: predicted), each row divided
    by its total, as a heat map titled for the linear probe."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(classes))
    figure, axes = plt.subplots(figsize=(size + 1, size))
    rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("linear probe: confusion (row-normalised)")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
