"""Folders of image files: classes, centre crops, grayscale, unlabelled folders, and bad,
truncated, missing or empty ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from contrastive.data.errors import DatasetFormatError, DatasetNotFoundError
from contrastive.data.sources import (
    ImageFolderDataset,
)
from tests.helpers.formats import (
    asymmetric,
    save,
)


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
