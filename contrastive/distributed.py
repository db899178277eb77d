"""Small helpers around :mod:`torch.distributed` that also work without a process group.

Every function here is safe to call in a plain single-process run (``torch.distributed`` not
available, or available but not initialised): it then behaves as a world of one process.

All gathers concatenate along dim 0, in rank order, and accept **unequal** dim-0 sizes across
ranks: the sizes are exchanged first (one tiny extra collective), each tensor is zero-padded to
the largest size for the collective, and the padding is sliced away again. Every other dim must
match across ranks. Like every collective, they must be called by all ranks of the group.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "Peer",
    "all_gather",
    "all_gather_object",
    "all_gather_sizes",
    "all_gather_with_grad",
    "is_distributed",
    "lost_peers",
    "max_over_ranks",
    "rank",
    "record_peers",
    "shutdown",
    "world_size",
]


def is_distributed() -> bool:
    """Whether ``torch.distributed`` is available and its default process group initialised.

    Examples:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group; 1 when not distributed.

    Examples:
        >>> world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """Rank of this process in the default group; 0 when not distributed.

    Examples:
        >>> rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def shutdown() -> None:
    """Wait for every rank, then destroy the default process group (no-op without one).

    A job calls this last: a rank that leaves the interpreter while its peers still hold
    gloo/NCCL connections can abort at exit ("terminate called without an active
    exception") and fail a job whose work all finished.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` when not distributed): picklable
    values such as RNG states, for a checkpoint that keeps each rank's own.

    Examples:
        >>> all_gather_object({"a": 1})
        [{'a': 1}]
    """
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


@dataclass(frozen=True)
class Peer:
    """One rank of the process group: where it runs."""

    rank: int
    host: str
    pid: int

    def alive(self) -> bool | None:
        """Whether its process still exists (``None``: it runs on another host, so this
        process cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        try:  # a killed process its parent has not reaped yet is a zombie: gone
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def __str__(self) -> str:
        return f"rank {self.rank} (pid {self.pid} on {self.host})"


_PEERS: list[Peer] = []


def record_peers() -> list[Peer]:
    """Every rank's host and process id, gathered once after the process group starts, so
    that a rank whose collective fails can say which peer it lost (:func:`lost_peers`)."""
    global _PEERS
    here = (socket.gethostname(), os.getpid())
    _PEERS = [Peer(r, host, pid) for r, (host, pid) in enumerate(all_gather_object(here))]
    return _PEERS


def lost_peers() -> tuple[list[Peer], list[Peer]]:
    """``(gone, unknown)``: the recorded peers whose process has ended (on this host), and
    those on other hosts, whose state this process cannot see."""
    me = os.getpid()
    others = [p for p in _PEERS if p.pid != me or p.host != socket.gethostname()]
    states = [(p, p.alive()) for p in others]  # one look at each process
    return [p for p, alive in states if alive is False], [p for p, alive in states if alive is None]


def max_over_ranks(value: float, device: torch.device | None = None) -> float:
    """The largest ``value`` any rank passed (``value`` itself when not distributed): how
    the ranks agree on a flag, such as "a signal arrived" or "this step is not finite".

    Args:
        value: this rank's value.
        device: where to put the one-element tensor for the collective (must suit the
            backend, e.g. a CUDA device for NCCL); CPU when ``None``.

    Examples:
        >>> max_over_ranks(3.0)
        3.0
    """
    if not is_distributed():
        return float(value)
    flag = torch.tensor(float(value), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return float(flag.item())


def all_gather_sizes(local_size: int, device: torch.device | None = None) -> list[int]:
    """Gather one integer (typically a local batch size) from every rank, in rank order.

    Args:
        local_size: this rank's value.
        device: where to put the tiny tensor for the collective (must suit the backend, e.g. a
            CUDA device for NCCL); CPU when ``None``.

    Returns:
        ``[size_of_rank_0, size_of_rank_1, ...]``; ``[local_size]`` when not distributed.

    Examples:
        >>> all_gather_sizes(5)
        [5]
    """
    if world_size() == 1:
        return [local_size]
    size = torch.tensor([local_size], dtype=torch.long, device=device)
    sizes = [torch.empty_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _pad_dim0(x: Tensor, length: int) -> Tensor:
    """Zero-pad ``x`` along dim 0 up to ``length`` rows (differentiable)."""
    if x.shape[0] == length:
        return x
    padding = x.new_zeros((length - x.shape[0], *x.shape[1:]))
    return torch.cat([x, padding], dim=0)  # (length, ...)


def all_gather(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, **without** gradient.

    Meant for labels, indices or logging. Use :func:`all_gather_with_grad` for embeddings that
    must receive gradients from the other ranks' losses.

    Args:
        x: local tensor, shape (n_r, ...); ``n_r`` may differ across ranks.
        sizes: the dim-0 size of every rank if already known (saves one collective), as
            returned by :func:`all_gather_sizes`.

    Returns:
        Tensor of shape (sum_r n_r, ...), rank 0's rows first; ``x`` itself when not distributed.

    Examples:
        >>> all_gather(torch.arange(3))
        tensor([0, 1, 2])
    """
    if world_size() == 1:
        return x
    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], x.device)
    padded = _pad_dim0(x.detach(), max(sizes)).contiguous()
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:size] for g, size in zip(gathered, sizes, strict=True)], dim=0)


def all_gather_with_grad(x: Tensor, sizes: Sequence[int] | None = None) -> Tensor:
    r"""Concatenate ``x`` from every rank along dim 0, letting gradients flow back to every rank.

    Built on :func:`torch.distributed.nn.functional.all_gather`, whose backward *sums* over
    ranks the gradient that each rank's loss sends to a given rank's slice. So if rank ``r``
    computes a loss :math:`L_r` from the gathered tensor, rank ``s`` receives
    :math:`\sum_r \partial L_r / \partial x_s`. Combined with DDP's averaging of parameter
    gradients, the parameters get :math:`\nabla \frac{1}{R} \sum_r L_r`: the gradient of the
    mean of the per-rank losses, exactly as if one process had computed it.

    Unequal dim-0 sizes are supported (see the module docstring); the padding rows get no
    gradient.

    Args:
        x: local tensor, shape (n_r, ...); ``n_r`` may differ across ranks.
        sizes: the dim-0 size of every rank if already known (saves one collective).

    Returns:
        Tensor of shape (sum_r n_r, ...), rank 0's rows first. When not distributed, or with a
        world of one process, ``x`` itself (same object, same autograd graph).

    Examples:
        >>> x = torch.ones(2, 3, requires_grad=True)
        >>> all_gather_with_grad(x) is x
        True
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather as _autograd_all_gather

    if sizes is None:
        sizes = all_gather_sizes(x.shape[0], x.device)
    padded = _pad_dim0(x, max(sizes))  # (max_r n_r, ...)
    with warnings.catch_warnings():
        # Deprecated in recent torch in favour of a private functional-collective API; it is
        # still the public, eager-mode, autograd-aware all-gather.
        warnings.filterwarnings(
            "ignore", message=r".*all_gather is deprecated.*", category=FutureWarning
        )
        gathered = _autograd_all_gather(padded)
    return torch.cat([g[:size] for g, size in zip(gathered, sizes, strict=True)], dim=0)
