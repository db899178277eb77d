"""The precision rule of the contrastive losses and of the statistics logged beside them:
compute in float32 (float64 for float64 inputs) with autocast off, normalise with
``F.normalize``'s eps (an all-zero embedding has similarity 0 to everything instead of
NaN), and one shape check for a pair of views."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

NORMALIZE_EPS = 1e-12


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, otherwise float32 (fp16/bf16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def autocast_disabled(device: torch.device) -> AbstractContextManager[object]:
    """Context disabling autocast on ``device`` so matmuls run in the inputs' dtype."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def check_pair(z_a: Tensor, z_b: Tensor) -> None:
    """Two views' embeddings: non-empty ``(N, D)`` tensors of one shape."""
    if z_a.ndim != 2 or z_a.shape != z_b.shape or z_a.shape[0] == 0:
        raise ValueError(
            "z_a and z_b must be non-empty (N, D) tensors of the same shape, got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
