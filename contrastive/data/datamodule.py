"""The LightningDataModule over one offline source of :mod:`contrastive.data.sources`.

Training batches are ``(images, labels)`` with uint8 ``(B, C, H, W)`` images for the
batched view path (views are made on the device, see ``methods``), or float
``(B, V, C, S, S)`` views for the per-sample path (made in DataLoader workers).
Validation has two loaders: the labelled training set (the kNN bank, unaugmented) and
the test set, both uint8.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from contrastive.data.sampler import ResumableSampler
from contrastive.data.sources import ImageArrays, Source
from contrastive.transforms import PerSampleViews, ViewRecipe


class ArrayDataset(Dataset[tuple[Tensor, Tensor]]):
    """Images held in memory as one uint8 tensor; ``__getitems__`` slices a whole batch."""

    def __init__(self, arrays: ImageArrays, transform: Callable[[Tensor], Tensor] | None = None):
        self.images = arrays.images
        self.labels = arrays.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        if self.transform is not None:
            return [self[i] for i in indices]
        index = torch.as_tensor(indices)
        return _Batch(self.images[index], self.labels[index])


class _Batch(tuple):
    """A batch already collated by ``__getitems__``; :func:`collate` passes it through."""

    def __new__(cls, images: Tensor, labels: Tensor) -> _Batch:
        return super().__new__(cls, (images, labels))


class _TransformedDataset(Dataset[tuple[Tensor, Tensor]]):
    def __init__(self, base: Dataset[tuple[Tensor, Tensor]], transform: Callable[[Tensor], Tensor]):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``index``, or ``(index, seed)`` from :class:`ResumableSampler`: the views of that
        sample drawn from ``seed`` (the process's own RNG left as it was)."""
        if isinstance(key, int):
            image, label = self.base[key]
            return self.transform(image), label
        index, seed = key
        image, label = self.base[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


def worker_init(worker_id: int, rank: int = 0) -> None:
    """Every DataLoader worker's start: ignore SIGINT, then seed as Lightning would.

    A Ctrl-C in a terminal reaches the whole process group, workers included; the main
    process then finishes the step and writes ``last.ckpt``
    (:class:`contrastive.callbacks.Preemption`), which needs its workers alive. The
    seeding is Lightning's own (``pl_worker_init_function``, which it adds itself only to
    loaders without a ``worker_init_fn``) when ``seed_everything(workers=True)`` asked
    for it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


def collate(batch: Any) -> Any:
    if isinstance(batch, _Batch):
        return tuple(batch)
    return torch.utils.data.default_collate(batch)


class ImageDataModule(pl.LightningDataModule):
    """One datamodule for every source: pretraining, kNN-bank and test loaders, from the
    splits the source declares (:class:`~contrastive.data.sources.Splits`).

    Args:
        source: the dataset, built (``data.source``: its ``_target_`` and options).
        batch_size: training batch size per process.
        eval_batch_size: batch size of the two validation loaders.
        num_workers: DataLoader workers (the per-sample view path needs them; in-memory
            batches for the batched path do not).
        bank_size: use only the first ``bank_size`` bank images (``None``: all).
        seed: the base of the training order (:class:`ResumableSampler`): epoch ``e`` is
            shuffled by ``seed + e`` alone, so a restarted job replays it exactly.
        num_classes: the number of classes the jobs size their heads for (``None``: the
            source's; for an image folder, its class folders once read).

    Attributes:
        dataset: the source's name, e.g. ``"fashion_mnist"``.
        num_classes: as configured, else the source's; filled in from the class folders
            by :meth:`prepare_data` where only they can tell.
        classes: the class names of the last split loaded (empty before any is).
        labelled: whether the source has labels (``False``: pretraining only).
    """

    def __init__(
        self,
        source: Source,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        bank_size: int | None = None,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(source, Source):
            raise TypeError(
                f"source must be a contrastive.data.sources.Source, got {type(source).__name__}"
            )
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.dataset = source.name
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.bank_size = bank_size
        self.seed = seed
        self.num_classes = source.num_classes if num_classes is None else num_classes
        self.labelled = source.labelled
        self.splits = source.splits
        self.view_recipe: ViewRecipe | None = None
        self._datasets: dict[str, Dataset[tuple[Tensor, Tensor]]] = {}
        self.classes: tuple[str, ...] = ()

    def use_views(self, recipe: ViewRecipe) -> None:
        """Make per-sample views in the workers when ``recipe.backend == "per_sample"``."""
        self.view_recipe = recipe

    def _load(self, split: str) -> Dataset[tuple[Tensor, Tensor]]:
        if split in self._datasets:
            return self._datasets[split]
        loaded = self.source.load(split)
        # An image folder's items carry int labels; the loaders collate them alike.
        dataset: Dataset[tuple[Tensor, Tensor]] = (
            ArrayDataset(loaded) if isinstance(loaded, ImageArrays) else loaded  # type: ignore[assignment]
        )
        self.classes = tuple(loaded.classes)
        if self.num_classes is None and self.labelled and self.classes:
            self.num_classes = len(self.classes)
        self._datasets[split] = dataset
        return dataset

    def prepare_data(self) -> None:
        # Fails early, with the message of sources.DatasetNotFoundError, if data is missing.
        for split in self.splits.used(self.labelled):
            self._load(split)

    def setup(self, stage: str | None = None) -> None:
        for split in self.splits.used(self.labelled):
            self._load(split)

    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        image, _ = self._load(self.splits.test if self.labelled else self.splits.pretrain)[0]
        return tuple(image.shape)  # type: ignore[return-value]

    def _loader(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        shuffle: bool,
        drop_last: bool | None = None,
        sampler: ResumableSampler | None = None,
    ) -> DataLoader[Any]:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle if sampler is None else None,
            sampler=sampler,
            drop_last=shuffle if drop_last is None else drop_last,
            num_workers=self.num_workers,
            collate_fn=collate,
            worker_init_fn=functools.partial(worker_init, rank=rank),
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader[Any]:
        dataset = self._load(self.splits.pretrain)
        sampler = self.train_sampler()
        if self.view_recipe is not None and self.view_recipe.backend == "per_sample":
            dataset = _TransformedDataset(dataset, PerSampleViews(self.view_recipe))
            sampler.item_seeds = True  # each sample's views from (seed, epoch, index)
        return self._loader(dataset, self.batch_size, shuffle=True, sampler=sampler)

    def train_batches(self, world_size: int = 1, limit: int | float | None = None) -> int:
        """Training batches per epoch and process: the loader drops the partial ones, and
        ``limit`` (the trainer's ``limit_train_batches``) cuts the epoch as Lightning does:
        an int caps the count, a float keeps that fraction of it."""
        batches = len(self._load(self.splits.pretrain)) // world_size // self.batch_size  # type: ignore[arg-type]
        if isinstance(limit, int):
            return min(batches, limit)
        return batches if limit is None else int(batches * limit)

    def train_sampler(self) -> ResumableSampler:
        """Each epoch's order from ``seed`` and the epoch alone, sharded by rank; when the
        trainer restarts mid-epoch from a checkpoint, the rest of that epoch."""
        dataset = self._load(self.splits.pretrain)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, seed=self.seed)  # type: ignore[arg-type]
        if trainer is not None:
            # Lightning builds this loader (and its workers start drawing indices) before it
            # calls set_epoch, and when it resumes from a checkpoint, the sampler must
            # already know where the run stands. The epoch under way is ``started - 1``;
            # its batches whose step ran are ``processed`` (a checkpoint written in
            # on_train_batch_end has not yet counted its batch as completed).
            # An epoch cut by limit_train_batches ends at the limit, as Lightning's does.
            epochs = trainer.fit_loop.epoch_progress.current
            batches = trainer.fit_loop.epoch_loop.batch_progress.current
            done = int(getattr(batches, "processed", batches.completed))
            epoch = max(int(getattr(epochs, "started", 0)) - 1, 0)
            if 0 < done < self.train_batches(world, trainer.limit_train_batches):
                sampler.resume(epoch, done, self.batch_size)  # the rest of that epoch
            elif done:
                sampler.set_epoch(epoch + 1)  # it ended an epoch: the next one
            else:
                sampler.set_epoch(int(getattr(epochs, "processed", 0)))
        return sampler

    def labelled_loaders(self, batch_size: int) -> tuple[DataLoader[Any], DataLoader[Any]]:
        """Unaugmented uint8 ``(train, test)`` loaders of the labelled splits, the training
        one shuffled: what a linear probe trains and tests on."""
        return (
            self._loader(self._load(self.splits.bank), batch_size, shuffle=True, drop_last=False),
            self._loader(self._load(self.splits.test), batch_size, shuffle=False),
        )

    def labels(self, split: str = "train") -> Tensor:
        """All labels of a split, without decoding any image."""
        return torch.as_tensor(self._load(split).labels)  # type: ignore[attr-defined]

    def val_dataloader(self) -> list[DataLoader[Any]]:
        if not self.labelled:
            return []  # nothing to score an unlabelled folder against
        bank = self._load(self.splits.bank)
        if self.bank_size is not None and self.bank_size < len(bank):  # type: ignore[arg-type]
            bank = torch.utils.data.Subset(bank, range(self.bank_size))
        test = self._load(self.splits.test)
        return [
            self._loader(bank, self.eval_batch_size, shuffle=False),
            self._loader(test, self.eval_batch_size, shuffle=False),
        ]
