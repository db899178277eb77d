r"""The momentum (key) encoder of MoCo: an exponential moving average of online modules.

After every optimiser step the key encoder's parameters follow the online ones,

.. math:: \theta_k \leftarrow m\, \theta_k + (1 - m)\, \theta_q,

with ``m`` constant (MoCo v2: 0.999) or on a cosine schedule from ``m_0`` to 1 over the run
(MoCo v3, BYOL: 0.99 -> 1), :func:`momentum_at`. Its parameters take no gradient and are
never in the optimiser; they are in ``state_dict`` (so in every checkpoint) under
``momentum_encoder.*``, and ``backbone.pt`` holds the online (query) backbone.

Shuffled BatchNorm (MoCo, He et al. 2020, section 3.3): a key encoder whose BatchNorm sees
the same samples as the query encoder's leaks which key is the positive through the batch
statistics. :func:`key_forward` breaks that link: ``"ranks"`` (under DDP) permutes the
global batch across processes before the key encoder and back after it, as MoCo does;
``"sub_batches"`` (one process) runs both encoders in ``groups`` sub-batches, the keys'
drawn after a random permutation, so a key is normalised with other samples than its query.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive import distributed

SHUFFLE_BN = ("auto", "none", "sub_batches", "ranks")


def check_momentum(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a momentum in [0, 1], got {value!r}")
    return float(value)


def momentum_at(step: int, total_steps: int, start: float, end: float | None) -> float:
    """The momentum at ``step``: ``start`` when ``end`` is None, else the cosine schedule
    ``end - (end - start) (cos(pi step / total_steps) + 1) / 2``."""
    if end is None or total_steps <= 0:
        return start
    progress = min(step / total_steps, 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


class MomentumEncoder(nn.Module):
    """Frozen copies of ``modules`` (applied in order), updated as their EMA, and how the
    keys are made with them.

    Args:
        modules: the online modules to follow, by name (``backbone``, ``projection_head``).
        momentum: the EMA momentum in [0, 1] (the start of the schedule with ``momentum_end``).
        momentum_end: if set, a cosine schedule from ``momentum`` to it over the run.
        shuffle_bn: ``auto``, ``none``, ``sub_batches`` or ``ranks`` (the module docstring);
            with ``trainer.sync_batchnorm=true`` choose ``none``.
        shuffle_bn_groups: sub-batches per view with ``sub_batches``.

    Examples:
        >>> online = nn.Linear(2, 2)
        >>> key = MomentumEncoder({"head": online}, momentum=0.5)
        >>> [p.requires_grad for p in key.parameters()]
        [False, False]
        >>> with torch.no_grad():
        ...     _ = online.weight.add_(1.0)
        >>> key.update({"head": online}, step=0, total_steps=10)
        0.5
        >>> torch.allclose(key.encoder.head.weight, online.weight - 0.5)
        True
    """

    def __init__(
        self,
        modules: dict[str, nn.Module],
        momentum: float = 0.999,
        momentum_end: float | None = None,
        shuffle_bn: str = "none",
        shuffle_bn_groups: int = 4,
    ) -> None:
        super().__init__()
        self.momentum = check_momentum("method.momentum", momentum)
        self.momentum_end = (
            None if momentum_end is None else check_momentum("method.momentum_end", momentum_end)
        )
        resolve_shuffle_bn(shuffle_bn, 1)  # validates
        if shuffle_bn_groups < 1:
            raise ValueError(f"method.shuffle_bn_groups must be >= 1, got {shuffle_bn_groups}")
        self.shuffle_bn, self.shuffle_bn_groups = shuffle_bn, shuffle_bn_groups
        self.encoder = nn.Sequential()
        for name, module in modules.items():
            self.encoder.add_module(name, copy.deepcopy(module))
        self.encoder.requires_grad_(False)
        self._updated_at: int | None = None  # the step of the last update

    def forward(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    @property
    def scheduled(self) -> bool:
        return self.momentum_end is not None

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int, total_steps: int) -> float:
        """One EMA step towards ``modules`` (the names given at construction) with the
        momentum of ``step``; returns that momentum. Once per step: another call at the same
        ``step`` (the next micro-batch under gradient accumulation, when the online weights
        have not moved) changes nothing."""
        if step == self._updated_at:
            return momentum_at(step, total_steps, self.momentum, self.momentum_end)
        self._updated_at = step
        momentum = momentum_at(step, total_steps, self.momentum, self.momentum_end)
        keys: list[Tensor] = []
        online: list[Tensor] = []
        for name, module in modules.items():
            key_module = self.encoder.get_submodule(name)
            for key_param, param in zip(key_module.parameters(), module.parameters(), strict=True):
                keys.append(key_param)
                online.append(param.detach())
        if keys:
            torch._foreach_lerp_(keys, online, 1.0 - momentum)
        return momentum

    def shuffle_mode(self, world_size: int) -> str:
        """The BatchNorm shuffle in effect: ``auto`` is ``none`` when the trainer has made
        the BatchNorms synchronised (``trainer.sync_batchnorm=true``: statistics over the
        global batch, which a permutation does not change), ``ranks`` under DDP and
        ``sub_batches`` on one process."""
        if self.shuffle_bn == "auto" and any(
            isinstance(module, nn.SyncBatchNorm) for module in self.modules()
        ):
            return "none"
        return resolve_shuffle_bn(self.shuffle_bn, world_size)

    def online_groups(self, num_views: int, world_size: int) -> int:
        """Sub-batches the online encoder runs in: ``shuffle_bn_groups`` per view with
        ``sub_batches``, else 1 (one pass over all views)."""
        mode = self.shuffle_mode(world_size)
        return num_views * self.shuffle_bn_groups if mode == "sub_batches" else 1

    def keys(
        self,
        views: Tensor,
        world_size: int,
        generator: torch.Generator,
        channels_last: bool = False,
    ) -> Tensor:
        """L2-normalised keys ``(V, B, D)`` of ``views`` ``(V, B, C, H, W)``, no gradient,
        BatchNorm shuffled (``generator``, on the CPU: the same draw on every rank)."""
        num_views, batch_size = views.shape[:2]
        mode = self.shuffle_mode(world_size)
        groups = num_views * self.shuffle_bn_groups
        images = views.flatten(0, 1)  # (V B, C, H, W)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            keys = key_forward(self, images, mode, groups, generator)
        return F.normalize(keys.float(), dim=-1).view(num_views, batch_size, -1)


def grouped(function: Callable[[Tensor], Tensor], images: Tensor, groups: int) -> Tensor:
    """``function`` on ``groups`` consecutive sub-batches of ``images``, concatenated (each
    BatchNorm normalises a sub-batch with its own statistics)."""
    if groups <= 1:
        return function(images)
    return torch.cat([function(chunk) for chunk in images.chunk(groups)])


def key_forward(
    encoder: Callable[[Tensor], Tensor],
    images: Tensor,
    mode: str,
    groups: int,
    generator: torch.Generator,
) -> Tensor:
    """The key encoder on ``images`` ``(N, ...)`` with BatchNorm shuffled by ``mode``
    (``"none"``, ``"sub_batches"`` or ``"ranks"``; see the module docstring). ``generator``
    (on the CPU) draws the permutation: the same on every rank, and from the step, so a
    resumed run draws the same one."""
    if mode == "none":
        return encoder(images)
    if mode == "sub_batches":
        order = torch.randperm(images.shape[0], generator=generator).to(images.device)
        keys = grouped(encoder, images[order], groups)
        return keys[torch.argsort(order)]
    # "ranks": permute the global batch across processes (equal per-rank batches).
    local = images.shape[0]
    everything = distributed.all_gather(images)  # (W N, ...)
    order = torch.randperm(everything.shape[0], generator=generator).to(images.device)
    start = distributed.rank() * local
    keys = distributed.all_gather(encoder(everything[order[start : start + local]]))
    return keys[torch.argsort(order)][start : start + local]  # (N, D)


def resolve_shuffle_bn(mode: str, world_size: int) -> str:
    """``"auto"``: ``"ranks"`` under DDP, ``"sub_batches"`` on one process."""
    if mode not in SHUFFLE_BN:
        raise ValueError(f"method.shuffle_bn must be one of {list(SHUFFLE_BN)}, got {mode!r}")
    if mode == "auto":
        return "ranks" if world_size > 1 else "sub_batches"
    return mode
