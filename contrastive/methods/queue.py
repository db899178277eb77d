"""A FIFO ring of embeddings: MoCo's queue of negatives, NNCLR's support set.

The ring is two persistent buffers, ``queue`` ``(length, D)`` and its write ``pointer``
(with ``filled``, how many rows hold keys yet), so it is in ``state_dict``, in every
checkpoint, and restored bit for bit on resume (lightly's memory bank is not: it is a
non-persistent buffer). Under DDP, :meth:`EmbeddingQueue.push` gathers the keys of every
rank *before* writing them, in rank order, so every rank holds the same global queue
(lightly #1018: each rank kept its own). Until the ring is full only the filled rows are
used: no random vectors stand in as negatives at the start.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastive import distributed
from contrastive.errors import ConfigError


class EmbeddingQueue(nn.Module):
    """A ring of ``length`` embeddings of width ``dim``.

    Examples:
        >>> ring = EmbeddingQueue(4, 2)
        >>> ring.push(torch.ones(3, 2))
        >>> ring.entries().shape, int(ring.pointer)
        (torch.Size([3, 2]), 3)
        >>> ring.push(torch.zeros(3, 2))  # wraps around: the oldest rows are replaced
        >>> ring.entries().sum().item(), int(ring.pointer)
        (2.0, 2)
    """

    queue: Tensor
    pointer: Tensor
    filled: Tensor

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        if length < 1:
            raise ValueError(f"method.queue_length must be a positive integer, got {length!r}")
        self.length = length
        self.register_buffer("queue", torch.zeros(length, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def entries(self) -> Tensor:
        """The rows written so far, ``(min(pushed, length), D)``."""
        return self.queue[: int(self.filled)]

    def check(self, global_batch: int, keys_per_image: int = 1, name: str = "") -> None:
        """Refuse a length that is not a multiple of the global batch (each step writes
        ``keys_per_image`` such blocks), or shorter than one step's keys."""
        key = f"method.{name or 'queue_length'}"
        if self.length % global_batch:
            multiple = -(-self.length // global_batch) * global_batch
            raise ConfigError(
                f"{key}={self.length} is not a multiple of the global batch {global_batch} "
                f"(data.batch_size x processes); use a multiple of {global_batch}, e.g. "
                f"{key}={multiple}"
            )
        if self.length < global_batch * keys_per_image:
            raise ConfigError(
                f"{key}={self.length} is shorter than one step's "
                f"{global_batch * keys_per_image} keys ({keys_per_image} per image of a "
                f"global batch of {global_batch}); use at least "
                f"{key}={global_batch * keys_per_image}"
            )

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Write this rank's ``keys`` ``(n, D)`` and every other rank's (gathered first,
        rank 0's first) over the oldest rows; a push holding a non-finite key is dropped
        whole (on every rank alike), so no NaN row outlives the step that made it."""
        keys = distributed.all_gather(keys.detach())  # (sum_r n_r, D); itself on one process
        if not bool(torch.isfinite(keys).all()):  # the same verdict on every rank
            return  # a step the NaN guard skips must not leave NaN rows behind
        count = keys.shape[0]
        if count > self.length:
            raise ValueError(f"{count} keys do not fit a queue of length {self.length}")
        index = (self.pointer + torch.arange(count, device=keys.device)) % self.length
        self.queue.index_copy_(0, index, keys.to(self.queue.dtype))
        self.pointer.copy_((self.pointer + count) % self.length)
        self.filled.clamp_(min=0).add_(count).clamp_(max=self.length)
