"""ImageDataModule over a built source: the splits it declares, its name, classes and
class count, and what the jobs read off the datamodule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contrastive.data import ImageDataModule
from contrastive.data.sources import ImageFolder, Synthetic, make_synthetic
from tests.helpers.formats import asymmetric, save


def test_the_datamodule_reads_the_splits_its_source_declares() -> None:
    source = Synthetic(num_samples=64, num_classes=4, image_size=8, channels=1)
    datamodule = ImageDataModule(source, batch_size=16, eval_batch_size=32)
    assert datamodule.dataset == "synthetic" and datamodule.num_classes == 4
    assert datamodule.labelled and datamodule.classes == ()
    datamodule.prepare_data()

    assert datamodule.classes == ("class_0", "class_1", "class_2", "class_3")
    train = make_synthetic(64, 4, 8, 1, seed=0, split="train")
    test = make_synthetic(16, 4, 8, 1, seed=0, split="test")  # a quarter of num_samples
    assert torch.equal(datamodule.labels("train"), train.labels)
    assert torch.equal(datamodule.labels("test"), test.labels)
    bank, tested = datamodule.val_dataloader()
    assert torch.equal(torch.cat([images for images, _ in bank]), train.images)
    assert torch.equal(torch.cat([images for images, _ in tested]), test.images)
    assert datamodule.sample_shape() == (1, 8, 8) and datamodule.train_batches() == 4
    assert ImageDataModule(source, num_classes=7).num_classes == 7  # configured, not declared


def test_an_image_folder_has_num_classes_once_its_class_folders_are_read(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for name in ("a", "b", "c"):
            save(tmp_path / split / name / "x.png", asymmetric((4, 4, 3)))
    datamodule = ImageDataModule(ImageFolder(str(tmp_path), image_size=4))
    assert datamodule.dataset == "image_folder" and datamodule.num_classes is None
    datamodule.prepare_data()
    assert datamodule.num_classes == 3 and datamodule.classes == ("a", "b", "c")

    unlabelled = ImageDataModule(ImageFolder(str(tmp_path), image_size=4, labelled=False))
    unlabelled.prepare_data()
    assert not unlabelled.labelled and unlabelled.num_classes is None
    assert unlabelled.val_dataloader() == [] and unlabelled.labels().tolist() == [-1] * 3


def test_bad_arguments_stop_at_construction() -> None:
    with pytest.raises(TypeError, match="Source"):
        ImageDataModule("fashion_mnist")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data\.batch_size must be >= 1"):
        ImageDataModule(Synthetic(), batch_size=0)
    with pytest.raises(ValueError, match=r"data\.source\.on_bad_image must be error or skip"):
        ImageFolder("images", on_bad_image="ignore")  # type: ignore[arg-type]
