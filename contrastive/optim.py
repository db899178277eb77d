"""Optimisers and schedules for contrastive pretraining.

``configure`` functions here are plain PyTorch; Hydra builds them as ``_partial_`` objects
and the LightningModule supplies the parameters and the step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

ParamGroups = list[dict[str, Any]]


def param_groups(model: nn.Module, weight_decay: float | None = None) -> ParamGroups:
    """Split parameters: weights get ``weight_decay`` (``None``: the optimiser's own
    ``weight_decay``, so a Hydra partial keeps the one setting); biases and norm
    parameters get none.

    The second group is also excluded from LARS's trust-ratio adaptation (``lars_exclude``),
    as in SimCLR and BYOL.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    weights: dict[str, Any] = {"params": decay, "lars_exclude": False}
    if weight_decay is not None:
        weights["weight_decay"] = weight_decay
    return [weights, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For each parameter ``w`` with gradient ``g`` not in an excluded group:
    ``g <- g + wd * w``, ``trust = eta * ||w|| / ||g||`` (1 where either norm is 0),
    ``v <- momentum * v + trust * g``, ``w <- w - lr * v``. Excluded groups
    (``lars_exclude=True``: biases and norms) use plain SGD with momentum.

    Examples:
        >>> w = nn.Parameter(torch.ones(3))
        >>> opt = LARS([w], lr=0.1, momentum=0.0, eta=1.0)
        >>> w.grad = torch.full((3,), 2.0)
        >>> opt.step()
        >>> [round(v, 3) for v in w.tolist()]
        [0.9, 0.9, 0.9]
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    param_norm = torch.linalg.vector_norm(param)
                    grad_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["eta"] * param_norm / grad_norm,
                        torch.ones_like(param_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                param.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int = 1,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Per-step linear warmup from 0 to the base rate, then cosine decay to
    ``min_lr_ratio * base``. ``warmup_steps = round(warmup_epochs * steps_per_epoch)``.

    ``lr(s) = base * (s + 1) / warmup_steps`` for ``s < warmup_steps``, then
    ``base * (r + (1 - r) * (1 + cos(pi * p)) / 2)`` with ``p = (s - warmup_steps) /
    (total_steps - warmup_steps)`` and ``r = min_lr_ratio``.

    Examples:
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = warmup_cosine(opt, total_steps=10, steps_per_epoch=2, warmup_epochs=1)
        >>> rates = []
        >>> for _ in range(10):
        ...     rates.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
        >>> rates
        [0.5, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    warmup_steps = min(total_steps, round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def scale_learning_rate(base_lr: float, global_batch_size: int, rule: str = "none") -> float:
    """The learning rate for ``global_batch_size``, given ``base_lr`` at batch 256.

    ``linear``: ``base * B / 256`` (Goyal et al., 2017); ``sqrt``: ``base * sqrt(B / 256)``
    (SimCLR's rule for LARS at small batch); ``none``: ``base``.

    Examples:
        >>> scale_learning_rate(0.3, 512, "linear"), scale_learning_rate(0.3, 1024, "sqrt")
        (0.6, 0.6)
    """
    if rule == "none":
        return base_lr
    if rule == "linear":
        return base_lr * global_batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch_size / 256)
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}; choose none, linear or sqrt")
