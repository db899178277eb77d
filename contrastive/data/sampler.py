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

from torch.utils.data.distributed import DistributedSampler


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` (Lightning keeps it as it is under DDP) that can start
    an epoch part-way through.

    Args:
        dataset: the dataset (only its length is used).
        num_replicas, rank: the processes sharing each epoch, and this one's place.
        seed: the base of every epoch's permutation; ranks must share it.
        shuffle: shuffle each epoch (else the dataset's order).
        drop_last: drop the tail that does not divide evenly among the ranks.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
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

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._start = self._start, 0  # a resume applies to one iteration only
        return iter(indices[start:])
