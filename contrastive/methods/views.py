"""Where a method's views come from: one augmentation RNG per process, resumable.

The batched recipe (:class:`contrastive.transforms.BatchedViews`) draws every random
parameter from a ``torch.Generator`` on the batch's device. :class:`ViewStream` owns that
generator: seeded ``augment_seed + global_rank + 1_000_003 * epoch`` at each epoch start (a
resumed run does not replay the first epoch's views), saved per rank in every checkpoint and
restored on resume, so a run stopped mid-epoch continues the same views.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from contrastive import distributed

log = logging.getLogger(__name__)


class ViewStream:
    """The augmentation RNG of one process (``augment_seed``: the run's seed)."""

    def __init__(self, augment_seed: int = 0) -> None:
        self.augment_seed = augment_seed
        self._generator: torch.Generator | None = None
        self._state: Tensor | None = None  # from a mid-epoch checkpoint
        self._resume_offset = 0  # a fresh stream after a resume on another world size

    def seed(self, epoch: int, rank: int) -> int:
        return self.augment_seed + rank + 1_000_003 * epoch + self._resume_offset

    def generator(self, device: torch.device, epoch: int, rank: int) -> torch.Generator:
        """The generator on ``device``: created at first use (from the seed, or the state a
        checkpoint saved), then carried on from step to step."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed(epoch, rank))
            if self._state is not None:
                self._generator.set_state(self._state)
                self._state = None
        return self._generator

    def start_epoch(self, epoch: int, rank: int) -> None:
        """A new epoch's seed (Lightning does not call this when it resumes mid-epoch)."""
        self._state = None
        self._resume_offset = 0
        if self._generator is not None:
            self._generator.manual_seed(self.seed(epoch, rank))

    def state_dict(self) -> list[Tensor | None]:
        """Every rank's generator state, in rank order (a collective: every rank calls it)."""
        state = None if self._generator is None else self._generator.get_state()
        return distributed.all_gather_object(state)

    def load(self, saved: dict[str, Any], world_size: int, rank: int, global_step: int) -> None:
        """Continue from a checkpoint's ``contrastive`` entry: this rank's saved state when
        the number of processes is unchanged, a fresh stream from the seed, the epoch and
        the step otherwise."""
        self._generator = None
        states = saved.get("view_generators")
        if states is None and "view_generator" in saved:  # written before per-rank states
            states = [saved["view_generator"]]
        if states is None or len(states) == world_size:
            self._state = None if states is None else states[rank]
            return
        self._state = None
        self._resume_offset = 7_919 * global_step
        log.info(
            "views after this resume are drawn afresh: the checkpoint holds %d rank(s)' "
            "view generators, this run has %d",
            len(states),
            world_size,
        )


def view_pairs(num_global: int, num_local: int = 0) -> list[tuple[int, int]]:
    """The ordered (anchor view, positive global view) pairs of the views ``0 .. G-1``
    (global) and ``G .. G+L-1`` (local): every view against every global view but itself."""
    views = range(num_global + num_local)
    return [(a, g) for a in views for g in range(num_global) if a != g]
