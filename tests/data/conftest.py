"""Fixtures shared by the tests of the sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contrastive.data.sources import STL10_CLASSES, fashion_mnist
from tests.helpers.formats import asymmetric, write_stl10_images


@pytest.fixture
def no_system_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the system search path at an empty folder, as on a machine without the package."""
    empty = tmp_path / "system-empty"
    empty.mkdir()
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIRS", [empty])
    return empty


@pytest.fixture
def stl10_root(tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "stl10_binary"
    train = asymmetric((3, 3, 96, 96), seed=20)
    test = asymmetric((2, 3, 96, 96), seed=21)
    unlabeled = asymmetric((4, 3, 96, 96), seed=22)
    write_stl10_images(folder / "train_X.bin", train)
    write_stl10_images(folder / "test_X.bin", test)
    write_stl10_images(folder / "unlabeled_X.bin", unlabeled)
    np.array([1, 10, 4], np.uint8).tofile(folder / "train_y.bin")
    np.array([2, 3], np.uint8).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return {"root": tmp_path, "train": train, "test": test, "unlabeled": unlabeled}
