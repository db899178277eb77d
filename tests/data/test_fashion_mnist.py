"""Fashion-MNIST's IDX files: round trips against torchvision's reader, the search order
(root, torchvision's layout, Debian's package), downloads, and damaged files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    FASHION_MNIST_CLASSES,
    ImageArrays,
    fashion_mnist,
    load_fashion_mnist,
)
from tests.helpers.formats import (
    asymmetric,
    idx_bytes,
    write_fashion,
)

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_idx_header_matches_the_real_format() -> None:
    # The Fashion-MNIST/MNIST files start with 00 00 08 03 (images) and 00 00 08 01 (labels).
    assert idx_bytes(np.zeros((1, 2, 3), np.uint8), 2051)[:4] == bytes([0, 0, 8, 3])
    assert idx_bytes(np.zeros(1, np.uint8), 2049)[:4] == bytes([0, 0, 8, 1])


def test_fashion_mnist_gzip_in_root_round_trips(tmp_path: Path, no_system_dirs: Path) -> None:
    images = asymmetric((3, 4, 5))  # non-square: rows and columns cannot be swapped
    labels = np.array([9, 0, 3], dtype=np.uint8)
    write_fashion(tmp_path, images, labels)

    data = load_fashion_mnist(tmp_path, train=True)

    assert isinstance(data, ImageArrays)
    assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
    assert tuple(data.images.shape) == (3, 1, 4, 5)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == [9, 0, 3]
    assert data.classes == FASHION_MNIST_CLASSES
    assert data.classes[9] == "Ankle boot" and len(data) == 3


def test_fashion_mnist_torchvision_layout_matches_torchvision(
    tmp_path: Path, no_system_dirs: Path
) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    write_fashion(
        raw, asymmetric((4, 28, 28), seed=1), np.array([1, 2, 3, 4], np.uint8), "t10k", False
    )
    write_fashion(raw, asymmetric((2, 28, 28), seed=2), np.array([5, 6], np.uint8), "train", False)

    for train in (True, False):
        data = load_fashion_mnist(str(tmp_path), train=train)
        reference = torchvision.datasets.FashionMNIST(str(tmp_path), train=train, download=False)
        assert torch.equal(data.images[:, 0], reference.data)
        assert torch.equal(data.labels, reference.targets)
    (raw / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError):  # both files of a split are needed
        load_fashion_mnist(tmp_path, train=True)


def test_fashion_mnist_prefers_root_then_system_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "system"
    write_fashion(system, asymmetric((2, 4, 4), seed=2), np.array([5, 6], np.uint8))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "missing", system])
    root = tmp_path / "root"
    write_fashion(root, asymmetric((1, 4, 4), seed=3), np.array([7], np.uint8))

    assert load_fashion_mnist(root, train=True).labels.tolist() == [7]
    assert load_fashion_mnist(tmp_path / "elsewhere", train=True).labels.tolist() == [5, 6]
    assert load_fashion_mnist(None, train=True).labels.tolist() == [5, 6]


def test_fashion_mnist_missing_names_places_and_both_remedies(
    tmp_path: Path, no_system_dirs: Path
) -> None:
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist(root, train=True)

    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "Fashion-MNIST" in message and "train-images-idx3-ubyte" in message
    for place in (root, root / "FashionMNIST" / "raw", no_system_dirs):
        assert str(place) in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "data.source.download=true" in message and "torchvision" in message
    assert info.value.searched == (root, root / "FashionMNIST" / "raw", no_system_dirs)


def test_fashion_mnist_does_not_download_unless_asked(
    tmp_path: Path, no_system_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("download attempted")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", forbidden)
    with pytest.raises(DatasetNotFoundError):
        load_fashion_mnist(tmp_path, train=True)


def test_fashion_mnist_download_goes_through_torchvision_into_root(
    tmp_path: Path, no_system_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    images = asymmetric((2, 28, 28), seed=4)

    def fake_download(root: str, train: bool, download: bool) -> None:
        # Stands in for torchvision, which writes the raw files here (no network in tests).
        calls.append((root, train, download))
        write_fashion(Path(root) / "FashionMNIST" / "raw", images, np.array([3, 8], np.uint8))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_download)
    data = load_fashion_mnist(tmp_path, train=True, download=True)

    assert calls == [(str(tmp_path.absolute()), True, True)]
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


def test_fashion_mnist_failed_download_explains(
    tmp_path: Path, no_system_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DatasetNotFoundError, match="failed: Error downloading") as info:
        load_fashion_mnist(tmp_path, train=True, download=True)
    assert "sudo apt-get install dataset-fashion-mnist" in str(info.value)
    with pytest.raises(DatasetNotFoundError, match="no root"):
        load_fashion_mnist(None, train=True, download=True)


def _truncate_gzip(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def _truncate_payload(path: Path) -> None:
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))


def _wrong_magic(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 1  # an idx1 (labels) header on the images file
    path.write_bytes(gzip.compress(bytes(raw)))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b not really gzip")


def _header_only(path: Path) -> None:
    path.write_bytes(b"\x00\x00\x08")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate_gzip, "decompressed"),
        (_truncate_payload, "truncated"),
        (_wrong_magic, "magic number is 2049, expected 2051"),
        (_garbage, "decompressed"),
        (_header_only, "header"),
    ],
)
def test_corrupt_idx_names_the_file(
    tmp_path: Path, no_system_dirs: Path, damage: Any, reason: str
) -> None:
    images_path, _ = write_fashion(tmp_path, asymmetric((3, 6, 6)), np.zeros(3, np.uint8))
    damage(images_path)
    with pytest.raises(DatasetFormatError) as info:
        load_fashion_mnist(tmp_path, train=True)
    assert str(images_path) in str(info.value)
    assert reason in str(info.value)
    assert info.value.path == images_path


def test_idx_count_mismatch_and_bad_labels(tmp_path: Path, no_system_dirs: Path) -> None:
    write_fashion(tmp_path, asymmetric((3, 4, 4)), np.zeros(2, np.uint8))
    with pytest.raises(DatasetFormatError, match="3 images but 2 labels"):
        load_fashion_mnist(tmp_path, train=True)
    _, labels_path = write_fashion(tmp_path, asymmetric((2, 4, 4)), np.array([1, 10], np.uint8))
    with pytest.raises(DatasetFormatError, match="label 10") as info:
        load_fashion_mnist(tmp_path, train=True)
    assert info.value.path == labels_path


@pytest.mark.skipif(
    not (REAL_FASHION_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    train = load_fashion_mnist(tmp_path, train=True)  # empty root: falls through to Debian's
    test = load_fashion_mnist(None, train=False)

    assert tuple(train.images.shape) == (60000, 1, 28, 28)
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert train.labels[0].item() == 9  # the first training image is an ankle boot
    assert train.images.float().mean().item() == pytest.approx(72.94, abs=0.1)
