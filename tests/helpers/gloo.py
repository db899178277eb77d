"""Running a task on spawned gloo ranks, and the known cross-rank gather bug, for the tests.

``launch(task, world, workdir)`` spawns ``world`` processes (rendezvous through a file store
in ``workdir``), runs ``task(rank, world)`` in each (a module-level function, so that spawn
can pickle it by reference), passes each result back through a ``torch.save`` file, and
kills the workers if they do not finish before a deadline, so a hang fails the test instead
of blocking the suite. The same scheme as ``tests/test_distributed.py`` (which keeps its own
copy, bound to its task table), for any test module.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from contrastive import distributed

WORKER_DEADLINE_S = 90.0  # hang guard per launch; a healthy launch takes a few seconds
Task = Callable[[int, int], dict[str, Any]]

gloo_available = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)


def mean_over_ranks(value: Tensor) -> Tensor:
    """What DDP does to a gradient: all-reduce SUM, divide by the world size."""
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def gather_without_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Buggy drop-in for ``all_gather_with_grad``: other ranks' rows are detached copies, so
    a rank's embeddings never receive the gradient the other ranks' losses send them."""
    if sizes is None:
        sizes = distributed.all_gather_sizes(x.shape[0], x.device)
    padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x.detach()
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded)
    pieces = [buffer[:size] for buffer, size in zip(buffers, sizes, strict=True)]
    pieces[dist.get_rank()] = x
    return torch.cat(pieces, dim=0)


@contextmanager
def gather_replaced_by(gather: Callable[..., Tensor]) -> Iterator[None]:
    """``distributed.all_gather_with_grad`` replaced by ``gather`` inside the block."""
    original = distributed.all_gather_with_grad
    distributed.all_gather_with_grad = gather
    try:
        yield
    finally:
        distributed.all_gather_with_grad = original


def _worker(rank: int, world: int, task: Task, workdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{workdir}/store",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        assert distributed.world_size() == world and distributed.rank() == rank
        torch.save(task(rank, world), f"{workdir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    # Success: leave without interpreter finalisation (gloo's C++ threads can abort a clean
    # exit, see tests/test_distributed.py). Failures propagate to the launcher instead.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(task: Task, world: int, workdir: Path) -> list[dict[str, Any]]:
    """Run ``task`` on ``world`` spawned gloo ranks; their results in rank order."""
    workdir.mkdir(parents=True, exist_ok=True)
    previous_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned children
    try:
        context = mp.start_processes(
            _worker,
            args=(world, task, str(workdir)),
            nprocs=world,
            join=False,
            start_method="spawn",
        )
    finally:
        if previous_threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = previous_threads
    assert context is not None
    deadline = time.monotonic() + WORKER_DEADLINE_S
    try:
        # join() re-raises a worker's exception (with its traceback) and stops the others
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"workers (world {world}) still running after the deadline")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
    return [torch.load(workdir / f"rank{r}.pt") for r in range(world)]
