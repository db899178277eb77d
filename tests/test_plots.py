"""The figures of contrastive.plots: each writes a PNG where it is told to."""

from __future__ import annotations

from pathlib import Path

import torch

from contrastive.plots import (
    draw_curves,
    draw_embedding_map,
    draw_similarities,
    save_confusion_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_figure_is_a_png(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    similarities = torch.rand(40, generator=generator) * 2 - 1
    coords, labels = torch.randn(30, 2, generator=generator), torch.arange(30) % 12
    history = [{"step": s, "epoch": s // 5, "train/loss": 1.0 / (s + 1)} for s in range(20)]
    history.append({"step": 19, "epoch": 3, "val/knn_top1": 0.5})
    paths = [
        draw_similarities(similarities[:10], similarities[10:], "t", tmp_path / "s.png"),
        draw_embedding_map(coords, labels, ("a", "b"), "t", tmp_path / "m.png"),
        draw_curves({"run": history}, tmp_path / "c.png"),
    ]
    assert paths == [tmp_path / "s.png", tmp_path / "m.png", tmp_path / "c.png"]
    save_confusion_png(torch.eye(3, dtype=torch.long) * 5, ("a", "b", "c"), tmp_path / "x.png")
    for path in [*paths, tmp_path / "x.png"]:
        assert path.read_bytes()[:8] == PNG_MAGIC
