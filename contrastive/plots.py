"""The figures the jobs and callbacks write as PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def save_confusion_png(confusion: Tensor, classes: tuple[str, ...], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
