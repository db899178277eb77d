"""What the sources share: the registry and its declared splits, ImageArrays, and errors
that survive pickling. The formats have their own files (test_fashion_mnist.py, ...); every
fixture is written in the dataset's real on-disk format (tests/helpers/formats.py) and nothing
here touches the network."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    SOURCES,
    SPLITS,
    STL10,
    ImageArrays,
    load_cifar,
    load_fashion_mnist,
    load_stl10,
    make_synthetic,
    source_class,
)
from tests.helpers.formats import asymmetric, write_cifar, write_fashion


def test_registry_sources_load_their_splits(
    tmp_path: Path, no_system_dirs: Path, stl10_root: dict[str, Any]
) -> None:
    write_fashion(tmp_path, asymmetric((2, 4, 4)), np.array([4, 2], np.uint8), prefix="t10k")
    fmnist = SOURCES["fashion_mnist"](tmp_path, verify=False)  # type: ignore[call-arg]
    assert fmnist.load("test").labels.tolist() == [4, 2]

    write_cifar(
        tmp_path / "cifar-10-batches-py",
        {"test_batch": 2},
        "labels",
        "batches.meta",
        "label_names",
        list("abcdefghij"),
        True,
    )
    cifar = SOURCES["cifar10"](tmp_path, verify=False)  # type: ignore[call-arg]
    assert cifar.load("test").labels.tolist() == [0, 1]

    stl10 = SOURCES["stl10"](stl10_root["root"])  # type: ignore[call-arg]
    assert stl10.load("train").labels.tolist() == [0, 9, 3]

    synthetic = SOURCES["synthetic"](  # type: ignore[call-arg]
        num_samples=32, num_classes=2, image_size=8, channels=1
    ).load("val")  # a quarter of num_samples
    expected = make_synthetic(8, 2, 8, 1, split="val")
    assert torch.equal(synthetic.images, expected.images)  # type: ignore[union-attr]


def test_registry_rejects_unknown_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fashion_mnist, cifar10, cifar100, stl10, synthetic"):
        source_class("imagenet")
    with pytest.raises(ValueError, match="valid splits are: train, test, unlabeled"):
        STL10(str(tmp_path)).load("val")


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


def test_each_source_declares_its_splits_and_the_table_is_read_off_them() -> None:
    for name, cls in SOURCES.items():
        assert cls.name == name
        roles = (cls.splits.pretrain, cls.splits.bank, cls.splits.test)
        assert set(roles) <= set(cls.splits.valid)
        assert SPLITS[name] == roles
    assert SPLITS["stl10"] == ("train+unlabeled", "train", "test")
    assert SPLITS["image_folder"] == ("train", "train", "val")
    assert STL10.splits.used() == ("train+unlabeled", "train", "test")
    assert SOURCES["image_folder"].splits.used(labelled=False) == ("train",)


# Each downloadable format: its reader, the torchvision class that downloads it, and the
# way to get it other than the download that every message offers.
DOWNLOADABLE: dict[str, tuple[Any, str, str]] = {
    "fashion_mnist": (
        lambda root, download: load_fashion_mnist(root, train=True, download=download),
        "FashionMNIST",
        "sudo apt-get install dataset-fashion-mnist",
    ),
    "cifar10": (
        lambda root, download: load_cifar(root, "cifar10", train=True, download=download),
        "CIFAR10",
        "cifar-10-python.tar.gz",
    ),
    "stl10": (
        lambda root, download: load_stl10(root, "train", download=download),
        "STL10",
        "stl10_binary.tar.gz",
    ),
}


@pytest.mark.parametrize("name", list(DOWNLOADABLE))
def test_missing_data_is_explained_alike_by_every_downloadable_format(
    name: str, tmp_path: Path, no_system_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One find-or-download flow: the same places, remedies and details for all three."""
    load, downloader, other_way = DOWNLOADABLE[name]
    root = tmp_path / "root"
    with pytest.raises(DatasetNotFoundError) as info:
        load(root, False)
    message = str(info.value)
    assert info.value.searched and all(str(place) in message for place in info.value.searched)
    assert str(root) in message and other_way in message
    assert "set `data.source.download=true`" in message and "with torchvision (about" in message

    no_root = r"cannot be downloaded because no root directory \(`data.source.root`\)"
    with pytest.raises(DatasetNotFoundError, match=no_root):
        load(None, True)

    def offline(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, downloader, offline)
    with pytest.raises(DatasetNotFoundError) as failed:
        load(root, True)
    assert "Downloading it with torchvision failed: no network" in str(failed.value)
    assert other_way in str(failed.value) and "download=true" not in str(failed.value)

    monkeypatch.setattr(torchvision.datasets, downloader, lambda *args, **kwargs: None)
    with pytest.raises(DatasetNotFoundError, match="torchvision downloaded it, but not there"):
        load(root, True)
