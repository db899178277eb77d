"""The training sampler: a data order that a restarted job can replay exactly.

The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone (as
:class:`~torch.utils.data.distributed.DistributedSampler` draws it, shared by all ranks
and sharded by rank), so it never depends on how much global RNG the process used
before. A job restarted in the middle of an epoch calls :meth:`ResumableSampler.resume`
with the epoch and the number of batches already trained: the first iteration after that
starts at the next batch, and the loader's workers never load the skipped samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

from torch.utils.data.distributed import DistributedSampler

_MASK = (1 << 63) - 1


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch``: a SplitMix64 hash of the
    three, so no two (epoch, index) pairs share a stream and none depends on which worker
    or rank draws it.

    Examples:
        >>> item_seed(0, 0, 1) != item_seed(0, 1, 0)
        True
    """
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index) & ((1 << 64) - 1)
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (value ^ (value >> 31)) & _MASK


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` (Lightning keeps it as it is under DDP) that can start
    an epoch part-way through.

    Args:
        dataset: the dataset (only its length is used).
        num_replicas, rank: the processes sharing each epoch, and this one's place.
        seed: the base of every epoch's permutation; ranks must share it.
        shuffle: shuffle each epoch (else the dataset's order).
        drop_last: drop the tail that does not divide evenly among the ranks.
        item_seeds: yield ``(index, seed)`` pairs, ``seed`` = :func:`item_seed` of the
            sample in this epoch, for views made in DataLoader workers: each sample's
            augmentation then depends on (seed, epoch, index) alone, not on a worker's RNG,
            so a resumed epoch redraws exactly the views it would have drawn.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        item_seeds: bool = False,
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self._start = 0
        self.item_seeds = item_seeds

    def resume(self, epoch: int, batches_done: int, batch_size: int) -> None:
        """Make the next iteration the rest of ``epoch``, after its first ``batches_done``
        batches of ``batch_size`` samples (per process)."""
        if epoch < 0 or batches_done < 0 or batch_size < 1:
            raise ValueError(
                f"resume needs epoch >= 0, batches_done >= 0 and batch_size >= 1; got "
                f"{epoch}, {batches_done}, {batch_size}"
            )
        self.set_epoch(epoch)
        self._start = batches_done * batch_size

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())
        start, self._start = self._start, 0  # a resume applies to one iteration only
        if self.item_seeds:
            return iter([(i, item_seed(self.seed, self.epoch, i)) for i in indices[start:]])
        return iter(indices[start:])
