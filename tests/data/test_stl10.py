"""STL-10's column-major binaries: round trips against torchvision's reader, the unlabelled
split and its concatenation, damaged and missing files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    STL10_CLASSES,
    load_stl10,
)


def test_stl10_round_trips_column_major_planes(stl10_root: dict[str, Any]) -> None:
    train = load_stl10(stl10_root["root"], "train")
    assert tuple(train.images.shape) == (3, 3, 96, 96) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.from_numpy(stl10_root["train"]))
    assert train.labels.tolist() == [0, 9, 3]
    assert train.classes == STL10_CLASSES

    # Byte k of a stored plane is pixel (row k % 96, column k // 96).
    raw = np.fromfile(stl10_root["root"] / "stl10_binary" / "train_X.bin", np.uint8)
    n, c, k = 1, 2, 5 * 96 + 7
    offset = n * 3 * 96 * 96 + c * 96 * 96 + k
    assert train.images[n, c, k % 96, k // 96].item() == raw[offset]

    test = load_stl10(stl10_root["root"] / "stl10_binary", "test")
    assert torch.equal(test.images, torch.from_numpy(stl10_root["test"]))
    assert test.labels.tolist() == [1, 2]


def test_stl10_unlabeled_and_concatenation(stl10_root: dict[str, Any]) -> None:
    unlabeled = load_stl10(stl10_root["root"], "unlabeled")
    assert unlabeled.labels.tolist() == [-1] * 4
    assert torch.equal(unlabeled.images, torch.from_numpy(stl10_root["unlabeled"]))

    both = load_stl10(stl10_root["root"], "train+unlabeled")
    assert both.labels.tolist() == [0, 9, 3, -1, -1, -1, -1]
    expected = np.concatenate([stl10_root["train"], stl10_root["unlabeled"]])
    assert torch.equal(both.images, torch.from_numpy(expected))


@pytest.mark.parametrize("split", ["train", "test", "unlabeled", "train+unlabeled"])
def test_stl10_matches_torchvision_reader(
    stl10_root: dict[str, Any], monkeypatch: pytest.MonkeyPatch, split: str
) -> None:
    monkeypatch.setattr(torchvision.datasets.STL10, "_check_integrity", lambda self: True)
    reference = torchvision.datasets.STL10(str(stl10_root["root"]), split=split)
    data = load_stl10(stl10_root["root"], split)  # type: ignore[arg-type]
    assert torch.equal(data.images, torch.from_numpy(reference.data))
    assert data.labels.tolist() == np.asarray(reference.labels).tolist()


def test_stl10_damaged_and_missing_files(stl10_root: dict[str, Any], tmp_path: Path) -> None:
    folder = stl10_root["root"] / "stl10_binary"
    np.array([1, 2], np.uint8).tofile(folder / "train_y.bin")
    with pytest.raises(DatasetFormatError, match="2 labels for 3 images") as info:
        load_stl10(stl10_root["root"], "train")
    assert info.value.path == folder / "train_y.bin"

    (folder / "test_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(DatasetFormatError, match="not a positive multiple") as info:
        load_stl10(stl10_root["root"], "test")
    assert str(folder / "test_X.bin") in str(info.value)

    (folder / "unlabeled_X.bin").unlink()
    with pytest.raises(DatasetNotFoundError) as missing:
        load_stl10(stl10_root["root"], "train+unlabeled")
    message = str(missing.value)
    assert "unlabeled_X.bin" in message and str(folder) in message
    assert "data.source.download=true" in message and "stl10_binary.tar.gz" in message
