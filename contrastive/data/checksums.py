"""Known digests of the official dataset files, checked before training (``data.source.verify``).

Fashion-MNIST: SHA-256 of each IDX file's *decompressed* bytes, so a copy gzipped again
(Debian's ``dataset-fashion-mnist`` recompresses the archives) still verifies; taken from
that package's files (Fashion-MNIST of Xiao et al., 2017; 60,000 + 10,000 images).
CIFAR: MD5 of each pickled batch file, as torchvision lists them for the official archives.
A file whose name is not listed here (a subset, a fixture) is not checked.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from contrastive.data.errors import DatasetFormatError

KNOWN: dict[str, tuple[str, str]] = {
    # name (without .gz; the "idx3-ubyte" and ".idx3-ubyte" spellings both) -> (algorithm, hex)
    "train-images-idx3-ubyte": (
        "sha256",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    "train-labels-idx1-ubyte": (
        "sha256",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "t10k-images-idx3-ubyte": (
        "sha256",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    "t10k-labels-idx1-ubyte": (
        "sha256",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    "cifar-10-batches-py/data_batch_1": ("md5", "c99cafc152244af753f735de768cd75f"),
    "cifar-10-batches-py/data_batch_2": ("md5", "d4bba439e000b95fd0a9bffe97cbabec"),
    "cifar-10-batches-py/data_batch_3": ("md5", "54ebc095f3ab1f0389bbae665268c751"),
    "cifar-10-batches-py/data_batch_4": ("md5", "634d18415352ddfa80567beed471001a"),
    "cifar-10-batches-py/data_batch_5": ("md5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    "cifar-10-batches-py/test_batch": ("md5", "40351d587109b95175f43aff81a1287e"),
    "cifar-100-python/train": ("md5", "16019d7e3df5f24257cddd939b257f8d"),
    "cifar-100-python/test": ("md5", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
}


def known_name(path: Path) -> str | None:
    """The :data:`KNOWN` key for ``path``, or ``None`` for a file not listed."""
    name = path.name.removesuffix(".gz").replace("-images.idx", "-images-idx")
    name = name.replace("-labels.idx", "-labels-idx")
    if name in KNOWN:
        return name
    nested = f"{path.parent.name}/{path.name}"
    return nested if nested in KNOWN else None


def verify(path: Path, content: bytes, remedy: str) -> None:
    """Raise :class:`DatasetFormatError` naming ``path`` when ``content`` (its bytes, after
    decompression for IDX files) does not have the official digest."""
    name = known_name(path)
    if name is None:
        return
    algorithm, expected = KNOWN[name]
    found = hashlib.new(algorithm, content).hexdigest()
    if found != expected:
        raise DatasetFormatError(
            path,
            f"its {algorithm} is {found}, but the official {name} has {expected}",
            hint=f"The file is damaged or not the official one. {remedy} (or set "
            "data.source.verify=false to use a modified copy on purpose).",
        )
