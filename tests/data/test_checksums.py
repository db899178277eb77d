"""Data integrity (contrastive.data.checksums): a damaged dataset file is named before
training, the installed Fashion-MNIST verifies, CIFAR files are checked against
torchvision's md5."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers.jobs import run_script
from tests.helpers.markers import REAL_FASHION_MNIST, needs_fashion_mnist


@needs_fashion_mnist
def test_a_damaged_dataset_file_is_named_before_training(tmp_path: Path) -> None:
    import gzip

    root = tmp_path / "fmnist"
    root.mkdir()
    for source in REAL_FASHION_MNIST.parent.glob("*.gz"):
        shutil.copy(source, root / source.name)
    labels = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still a well-formed IDX file
    labels.write_bytes(gzip.compress(bytes(raw)))
    run_dir = tmp_path / "run"
    result = run_script(
        "pretrain.py", f"data.source.root={root}", "logger=none", f"hydra.run.dir={run_dir}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert str(labels) in result.stderr and "sha256" in result.stderr
    assert (
        "data.source.verify=false" in result.stderr
        and "apt-get install --reinstall" in result.stderr
    )
    assert "Traceback" not in result.stderr and not (run_dir / "checkpoints").exists()
    unchecked = run_script(
        "pretrain.py",
        f"data.source.root={root}",
        "data.source.verify=false",
        "trainer.max_steps=1",
        "trainer.limit_val_batches=1",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert unchecked.returncode == 0, unchecked.stderr[-2000:]


@needs_fashion_mnist
def test_the_installed_fashion_mnist_verifies() -> None:
    from contrastive.data.sources import load_fashion_mnist

    for train in (True, False):
        arrays = load_fashion_mnist(None, train=train, verify=True)
        assert len(arrays.images) == (60_000 if train else 10_000)


def test_cifar_files_are_checked_against_torchvision_md5(tmp_path: Path) -> None:
    from contrastive.data import checksums
    from contrastive.data.errors import DatasetFormatError

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.parent.mkdir()
    batch.write_bytes(b"not the official batch")
    with pytest.raises(
        DatasetFormatError,
        match=r"data_batch_3.*md5 is .*official cifar-10-batches-py/data_batch_3 has 54ebc095",
    ):
        checksums.verify(batch, batch.read_bytes(), "Download it again")
    checksums.verify(tmp_path / "my_subset.bin", b"anything", "-")  # unlisted: not checked
    assert checksums.known_name(Path("/x/t10k-images.idx3-ubyte.gz")) == "t10k-images-idx3-ubyte"
