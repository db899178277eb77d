"""ResumableSampler: DistributedSampler's order and shards, and a resume in mid-epoch."""

from __future__ import annotations

import pytest


def test_resumable_sampler_continues_an_epoch_and_shards_like_distributed_sampler() -> None:
    from torch.utils.data.distributed import DistributedSampler

    from contrastive.data.sampler import ResumableSampler

    data = list(range(103))
    for rank in (0, 1):
        ours = ResumableSampler(data, num_replicas=2, rank=rank, seed=5)
        theirs = DistributedSampler(data, num_replicas=2, rank=rank, seed=5, drop_last=True)  # type: ignore[arg-type]
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)
        full = list(ours)  # epoch 3 again: the order depends on seed + epoch only
        ours.resume(epoch=3, batches_done=4, batch_size=8)
        assert list(ours) == full[32:]
        assert list(ours) == full  # a resume applies to one pass
    sampler = ResumableSampler(data)
    sampler.set_epoch(1)
    other = list(sampler)
    sampler.set_epoch(2)
    assert sorted(other) == data and list(sampler) != other
    with pytest.raises(ValueError, match="batch_size >= 1"):
        sampler.resume(epoch=0, batches_done=1, batch_size=0)
