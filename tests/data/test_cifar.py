"""CIFAR-10 and CIFAR-100 pickles, official-like (Python 2, bytes keys) and not: round trips
against torchvision's reader, missing and corrupt files, and pickles that try to run code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets

from contrastive.data import sources
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    load_cifar,
)
from tests.helpers.formats import (
    CIFAR10_FILES,
    write_cifar,
)


@pytest.mark.parametrize("like_official", [True, False])
def test_cifar10_round_trips_pixels_labels_and_order(tmp_path: Path, like_official: bool) -> None:
    names = list(sources.CIFAR10_CLASSES)
    written = write_cifar(
        tmp_path / "cifar-10-batches-py",
        CIFAR10_FILES,
        "labels",
        "batches.meta",
        "label_names",
        names,
        like_official,
    )

    train = load_cifar(tmp_path, "cifar10", train=True)
    test = load_cifar(tmp_path, "cifar10", train=False)

    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert tuple(train.images.shape) == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    n, c, y, x = 7, 1, 2, 30
    assert train.images[n, c, y, x].item() == expected[n, c * 1024 + y * 32 + x]
    assert torch.equal(train.images.flatten(1), torch.from_numpy(expected))
    labels = [label for i in range(1, 6) for label in written[f"data_batch_{i}"][1]]
    assert train.labels.tolist() == labels
    assert test.labels.tolist() == written["test_batch"][1] and len(test) == 3
    assert train.classes == tuple(names)


def test_cifar10_matches_torchvision_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar(
        tmp_path / "cifar-10-batches-py",
        CIFAR10_FILES,
        "labels",
        "batches.meta",
        "label_names",
        list(sources.CIFAR10_CLASSES),
        like_official=False,
    )
    # torchvision only accepts the official files' md5 sums; switch that check off to compare.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    for train in (True, False):
        reference = torchvision.datasets.CIFAR10(str(tmp_path), train=train, download=False)
        data = load_cifar(tmp_path, "cifar10", train=train)
        assert torch.equal(data.images.permute(0, 2, 3, 1), torch.from_numpy(reference.data))
        assert data.labels.tolist() == reference.targets
        assert list(data.classes) == reference.classes


def test_cifar100_uses_fine_labels_and_accepts_the_folder_as_root(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    class_names = [f"fine{i}" for i in range(100)]
    written = write_cifar(
        folder,
        {"train": 4, "test": 2},
        "fine_labels",
        "meta",
        "fine_label_names",
        class_names,
        True,
    )
    for root in (tmp_path, folder):
        data = load_cifar(root, "cifar100", train=True)
        assert torch.equal(data.images.flatten(1), torch.from_numpy(written["train"][0]))
        assert data.labels.tolist() == written["train"][1]
        assert data.classes == tuple(class_names)


def test_cifar_missing_explains_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar(tmp_path, "cifar10", train=True)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "batches.meta" in message
    assert "data.source.download=true" in message and "cifar-10-python.tar.gz" in message

    with pytest.raises(DatasetNotFoundError, match="No root directory"):
        load_cifar(None, "cifar100", train=False)

    partial = tmp_path / "cifar-10-batches-py"
    write_cifar(partial, {"data_batch_1": 1}, "labels", "batches.meta", "label_names", ["a"], True)
    with pytest.raises(DatasetNotFoundError, match="lacks data_batch_2, data_batch_3"):
        load_cifar(tmp_path, "cifar10", train=True)


def test_cifar_corrupt_pickles_name_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    write_cifar(
        folder,
        {"train": 2, "test": 2},
        "fine_labels",
        "meta",
        "fine_label_names",
        ["a"] * 100,
        True,
    )
    train = folder / "train"
    train.write_bytes(train.read_bytes()[:100])
    with pytest.raises(DatasetFormatError, match="not a readable pickle") as info:
        load_cifar(tmp_path, "cifar100", train=True)
    assert info.value.path == train and str(train) in str(info.value)

    train.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetFormatError, match="no 'fine_labels' entry"):
        load_cifar(tmp_path, "cifar100", train=True)

    train.write_bytes(
        pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"fine_labels": [0, 1]})
    )
    with pytest.raises(DatasetFormatError, match=r"expected uint8 \(N, 3072\)"):
        load_cifar(tmp_path, "cifar100", train=True)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder, {"test_batch": 1}, "labels", "batches.meta", "label_names", ["a"], True)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit(marker)}))
    with pytest.raises(DatasetFormatError, match="system"):
        load_cifar(tmp_path, "cifar10", train=False)
    assert not marker.exists()
