"""Tests of the offline dataset sources.

Every fixture is written in the dataset's real on-disk format (IDX, CIFAR pickles, STL-10
column-major binaries, PNG/JPEG folders); where torchvision can read the same fixture, its
reader is used as the reference. Nothing here touches the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image
from torch.utils.data import DataLoader

from contrastive.data import sources
from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    FASHION_MNIST_CLASSES,
    STL10_CLASSES,
    ImageArrays,
    ImageFolderDataset,
    load_arrays,
    load_cifar,
    load_fashion_mnist,
    load_stl10,
    make_synthetic,
)

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def asymmetric(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct-looking uint8 values, so a transpose or flip cannot go unnoticed."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def no_system_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the system search path at an empty folder, as on a machine without the package."""
    empty = tmp_path / "system-empty"
    empty.mkdir()
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [empty])
    return empty


# --------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion(
    directory: Path,
    images: np.ndarray,
    labels: np.ndarray,
    prefix: str = "train",
    compress: bool = True,
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    paths = (
        directory / f"{prefix}-images-idx3-ubyte{suffix}",
        directory / f"{prefix}-labels-idx1-ubyte{suffix}",
    )
    for path, array, magic in zip(paths, (images, labels), (2051, 2049), strict=True):
        payload = idx_bytes(array, magic)
        path.write_bytes(gzip.compress(payload) if compress else payload)
    return paths


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
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", [tmp_path / "missing", system])
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
    assert "data.download=true" in message and "torchvision" in message
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


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------


def cifar_pickle(batch: dict[Any, Any], like_official: bool) -> bytes:
    """Pickle ``batch``; ``like_official`` mimics the Python 2 files (protocol 2, numpy.core)."""
    if not like_official:
        return pickle.dumps(batch)
    payload = pickle.dumps(batch, protocol=2)
    arrays = sum(isinstance(value, np.ndarray) for value in batch.values())
    assert payload.count(b"cnumpy._core.multiarray\n_reconstruct\n") == arrays
    return payload.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar(
    directory: Path,
    files: dict[str, int],
    labels_key: str,
    meta_file: str,
    names_key: str,
    class_names: list[str],
    like_official: bool,
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write CIFAR batches of the given sizes; keys are bytes as ``encoding="bytes"`` gives."""

    def key(name: str) -> Any:
        return name.encode() if like_official else name

    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for index, (name, count) in enumerate(files.items()):
        data = asymmetric((count, 3072), seed=10 + index)
        labels = [(index + i) % len(class_names) for i in range(count)]
        batch = {
            key("batch_label"): key(f"batch {index}"),
            key(labels_key): labels,
            key("data"): data,
            key("filenames"): [key(f"img_{index}_{i}.png") for i in range(count)],
        }
        (directory / name).write_bytes(cifar_pickle(batch, like_official))
        written[name] = (data, labels)
    meta = {key(names_key): [key(n) for n in class_names], key("num_vis"): 3072}
    (directory / meta_file).write_bytes(cifar_pickle(meta, like_official))
    return written


CIFAR10_FILES = {**{f"data_batch_{i}": i for i in range(1, 6)}, "test_batch": 3}


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
    assert "data.download=true" in message and "cifar-10-python.tar.gz" in message

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


# --------------------------------------------------------------------------------------
# STL-10
# --------------------------------------------------------------------------------------


def write_stl10_images(path: Path, images: np.ndarray) -> None:
    """Store (N, 3, H, W) images as STL-10 does: each 96 x 96 plane column-major."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(path)


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
    assert "data.download=true" in message and "stl10_binary.tar.gz" in message


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def save(path: Path, pixels: np.ndarray, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


@pytest.fixture
def folder_tree(tmp_path: Path) -> dict[str, Any]:
    root = tmp_path / "images"
    cat = asymmetric((8, 8, 3), seed=30)
    wide = asymmetric((8, 16, 3), seed=31)  # H=8, W=16
    tall = asymmetric((16, 8, 3), seed=32)
    save(root / "cat" / "a.png", cat)
    save(root / "dog" / "nested" / "b.PNG", wide)
    save(root / "dog" / "c.bmp", tall)
    save(root / "dog" / "d.jpeg", asymmetric((12, 12, 3), seed=33), quality=90)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"AppleDouble junk")
    (root / ".thumbnails").mkdir()
    save(root / ".thumbnails" / "t.png", cat)
    return {"root": root, "cat": cat, "wide": wide, "tall": tall}


def test_image_folder_labels_pixels_and_centre_crop(folder_tree: dict[str, Any]) -> None:
    dataset = ImageFolderDataset(folder_tree["root"], image_size=8)

    assert dataset.classes == ("cat", "dog")
    names = [(path.name, label) for path, label in dataset.samples]
    assert names == [("a.png", 0), ("c.bmp", 1), ("d.jpeg", 1), ("b.PNG", 1)]
    assert dataset.labels.tolist() == [0, 1, 1, 1] and len(dataset) == 4

    image, label = dataset[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 8, 8) and label == 0
    assert torch.equal(image, torch.from_numpy(folder_tree["cat"]).permute(2, 0, 1))
    tall, _ = dataset[1]  # 16 x 8: centre rows 4..11
    assert torch.equal(tall, torch.from_numpy(folder_tree["tall"][4:12]).permute(2, 0, 1))
    wide, _ = dataset[3]  # 8 x 16: centre columns 4..11
    assert torch.equal(wide, torch.from_numpy(folder_tree["wide"][:, 4:12]).permute(2, 0, 1))
    jpeg, _ = dataset[2]  # 12 x 12 resized to 8 x 8
    assert tuple(jpeg.shape) == (3, 8, 8)
    assert dataset.verify() == []


def test_image_folder_grayscale_and_resizing(folder_tree: dict[str, Any]) -> None:
    dataset = ImageFolderDataset(folder_tree["root"], image_size=4, channels=1)
    image, _ = dataset[0]
    gray = Image.fromarray(folder_tree["cat"]).convert("L")
    assert tuple(image.shape) == (1, 4, 4)
    # torchvision's antialiased bilinear resize is designed to match PIL's, up to rounding.
    expected = np.asarray(gray.resize((4, 4), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(image[0].numpy().astype(int) - expected).max() <= 1


def test_image_folder_unlabelled_and_dataloader(folder_tree: dict[str, Any]) -> None:
    dataset = ImageFolderDataset(folder_tree["root"], image_size=6, labelled=False)
    assert dataset.classes == () and len(dataset) == 4
    assert dataset.labels.tolist() == [-1] * 4
    images, labels = next(iter(DataLoader(dataset, batch_size=4)))
    assert tuple(images.shape) == (4, 3, 6, 6) and labels.tolist() == [-1] * 4


def test_image_folder_bad_files_error_or_skip(folder_tree: dict[str, Any]) -> None:
    bad = folder_tree["root"] / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG but then garbage")

    with pytest.raises(DatasetFormatError) as info:
        ImageFolderDataset(folder_tree["root"], image_size=8)
    assert str(bad) in str(info.value) and "on_bad_image='skip'" in str(info.value)
    assert info.value.paths == (bad,)

    with pytest.warns(UserWarning, match=r"Skipping 1 unreadable image.*broken\.png"):
        dataset = ImageFolderDataset(folder_tree["root"], image_size=8, on_bad_image="skip")
    assert len(dataset) == 4 and bad not in [path for path, _ in dataset.samples]
    assert dataset.classes == ("cat", "dog")


def test_image_folder_truncated_file_found_by_verify(folder_tree: dict[str, Any]) -> None:
    truncated = folder_tree["root"] / "cat" / "z.png"
    save(truncated, asymmetric((64, 64, 3), seed=34))
    truncated.write_bytes(truncated.read_bytes()[:300])  # header intact, pixels cut off

    dataset = ImageFolderDataset(folder_tree["root"], image_size=8)  # headers are fine
    assert dataset.verify() == [truncated]
    index = [path for path, _ in dataset.samples].index(truncated)
    with pytest.raises(DatasetFormatError, match="cannot decode") as info:
        dataset[index]
    assert info.value.path == truncated

    skipping = ImageFolderDataset(folder_tree["root"], image_size=8, on_bad_image="skip")
    with pytest.warns(UserWarning, match="z.png"):
        image, label = skipping[index]
    expected, expected_label = skipping[index + 1]
    assert torch.equal(image, expected) and label == expected_label


def test_image_folder_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist") as info:
        ImageFolderDataset(tmp_path / "nope", image_size=8)
    assert str(tmp_path / "nope") in str(info.value)

    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no class subfolders with images"):
        ImageFolderDataset(tmp_path / "empty", image_size=8)
    with pytest.raises(DatasetNotFoundError, match="has none"):
        ImageFolderDataset(tmp_path / "empty", image_size=8, labelled=False)

    save(tmp_path / "flat" / "x.png", asymmetric((4, 4, 3)))
    with pytest.raises(DatasetNotFoundError, match="labelled=False"):
        ImageFolderDataset(tmp_path / "flat", image_size=8)
    assert len(ImageFolderDataset(tmp_path / "flat", image_size=8, labelled=False)) == 1


def test_image_folder_keeps_label_indices_of_empty_classes(tmp_path: Path) -> None:
    save(tmp_path / "b" / "x.png", asymmetric((4, 4, 3)))
    (tmp_path / "a").mkdir()
    with pytest.warns(UserWarning, match="contain no images: a"):
        dataset = ImageFolderDataset(tmp_path, image_size=4)
    assert dataset.classes == ("a", "b") and dataset.labels.tolist() == [1]


# --------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed() -> None:
    first = make_synthetic(60, 3, 16, 3, seed=5)
    again = make_synthetic(60, 3, 16, 3, seed=5)
    other = make_synthetic(60, 3, 16, 3, seed=6)

    assert tuple(first.images.shape) == (60, 3, 16, 16) and first.images.dtype == torch.uint8
    assert first.labels.dtype == torch.int64 and first.labels.bincount().tolist() == [20] * 3
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, other.images)
    assert first.classes == ("class_0", "class_1", "class_2")
    gray = make_synthetic(10, 2, 8, 1)
    assert tuple(gray.images.shape) == (10, 1, 8, 8)


def test_synthetic_classes_are_separable_across_splits() -> None:
    train = make_synthetic(500, 10, 32, 3, seed=0, split="train")
    test = make_synthetic(500, 10, 32, 3, seed=0, split="test")
    assert not torch.equal(train.images, test.images)

    x_train = train.images.flatten(1).float()
    x_test = test.images.flatten(1).float()
    means = torch.stack([x_train[train.labels == k].mean(0) for k in range(10)])
    predicted = torch.cdist(x_test, means).argmin(1)
    accuracy = (predicted == test.labels).float().mean().item()
    assert accuracy > 0.9

    # Not trivially easy either: samples of one class differ from each other.
    same_class = x_train[train.labels == 0]
    assert (same_class - same_class.mean(0)).std() > 5


# --------------------------------------------------------------------------------------
# Registry and errors
# --------------------------------------------------------------------------------------


def test_load_arrays_dispatches(
    tmp_path: Path, no_system_dirs: Path, stl10_root: dict[str, Any]
) -> None:
    write_fashion(tmp_path, asymmetric((2, 4, 4)), np.array([4, 2], np.uint8), prefix="t10k")
    assert load_arrays("fashion_mnist", tmp_path, "test", False).labels.tolist() == [4, 2]

    write_cifar(
        tmp_path / "cifar-10-batches-py",
        {"test_batch": 2},
        "labels",
        "batches.meta",
        "label_names",
        list("abcdefghij"),
        True,
    )
    assert load_arrays("cifar10", tmp_path, "test", False).labels.tolist() == [0, 1]

    assert load_arrays("stl10", stl10_root["root"], "train", False).labels.tolist() == [0, 9, 3]

    synthetic = load_arrays(
        "synthetic", None, "val", False, num_samples=8, num_classes=2, image_size=8, channels=1
    )
    expected = make_synthetic(8, 2, 8, 1, split="val")
    assert torch.equal(synthetic.images, expected.images)


def test_load_arrays_rejects_unknown_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fashion_mnist, cifar10, cifar100, stl10, synthetic"):
        load_arrays("imagenet", tmp_path, "train", False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid splits are: train, test, unlabeled"):
        load_arrays("stl10", tmp_path, "val", False)


def test_image_arrays_validates() -> None:
    images = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        ImageArrays(images.float(), torch.zeros(2, dtype=torch.int64), ("a",))
    with pytest.raises(ValueError, match="int64"):
        ImageArrays(images, torch.zeros(2, dtype=torch.int32), ("a",))
    with pytest.raises(ValueError, match=r"\[-1, 1\)"):
        ImageArrays(images, torch.tensor([0, 1]), ("a",))


def test_errors_survive_pickling() -> None:
    # Errors raised in DataLoader workers or other processes are pickled on the way back.
    not_found = DatasetNotFoundError("X", ["/a", "/b"], ["do this", "do that"], detail="Why")
    assert str(not_found) == (
        "Could not find X. Looked in: /a, /b. Why. To get it, do this; or do that."
    )
    bad = DatasetFormatError(["/x.png", "/y.png"], "unreadable")
    for error in (not_found, bad):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert pickle.loads(pickle.dumps(not_found)).searched == (Path("/a"), Path("/b"))
