"""Writers of each dataset's real on-disk format (IDX, CIFAR pickles, STL-10 column-major
binaries, image files), shared by the tests of the sources and of the jobs."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def asymmetric(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Distinct-looking uint8 values, so a transpose or flip cannot go unnoticed."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


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


def write_stl10_images(path: Path, images: np.ndarray) -> None:
    """Store (N, 3, H, W) images as STL-10 does: each 96 x 96 plane column-major."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(path)


def save(path: Path, pixels: np.ndarray, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def cifar10_root(tmp_path: Path, per_file: int = 24) -> Path:
    """A small CIFAR-10 in its native pickles under ``tmp_path / "cifar"``, laid out as the
    official archive (``per_file`` images in each batch file)."""
    root = tmp_path / "cifar"
    write_cifar(
        root / "cifar-10-batches-py",
        {name: per_file for name in CIFAR10_FILES},
        "labels",
        "batches.meta",
        "label_names",
        [f"class{i}" for i in range(10)],
        like_official=True,
    )
    return root
