"""What the sources share: the name dispatcher, ImageArrays, and errors
that survive pickling. The formats have their own files (test_fashion_mnist.py, ...); every
fixture is written in the dataset's real on-disk format (tests/data/formats.py) and nothing
here touches the network."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import ImageArrays, load_arrays, make_synthetic
from tests.data.formats import asymmetric, write_cifar, write_fashion


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
