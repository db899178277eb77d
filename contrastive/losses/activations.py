"""Output activations, optionally with a softmax temperature.

The temperature ``T`` of a softmax divides the logits before normalisation: ``T > 1`` flattens
the distribution towards uniform, ``T < 1`` sharpens it towards the arg-max one-hot. It is used
by knowledge distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network")
and, inside the contrastive losses, to scale cosine similarities. Every temperature of this
package (activations, distillation and contrastive losses) is validated by
:func:`check_temperature`.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

__all__ = [
    "SoftmaxWithTemperature",
    "check_loss_temperature",
    "check_temperature",
    "log_softmax_with_temperature",
    "sigmoid",
    "softmax_with_temperature",
    "tanh",
]


def check_temperature(temperature: float, name: str = "temperature") -> float:
    """Return ``temperature`` as a float, or raise ``ValueError`` unless it is finite and > 0.

    Shared by every loss and activation of this package that takes a temperature; ``name``
    is the argument's name in the message.

    Examples:
        >>> check_temperature(2)
        2.0
        >>> check_temperature(0.0, "student_temperature")
        Traceback (most recent call last):
        ...
        ValueError: student_temperature must be a finite number > 0, got 0.0
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(
            f"{name} must be a finite real number > 0, got {temperature!r} "
            f"of type {type(temperature).__name__}"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def check_loss_temperature(
    temperature: float | Tensor, name: str = "temperature"
) -> float | Tensor:
    """A contrastive loss's temperature: a number as :func:`check_temperature` returns it, or a
    0-dim floating-point tensor as it is (a learnt temperature, differentiated through).

    A tensor's value is not checked (that would synchronise the device at every step); the
    module that learns it keeps it finite and >= its ``min_temperature``
    (:class:`contrastive.losses.InfoNCELoss`).

    Examples:
        >>> check_loss_temperature(0.5)
        0.5
        >>> check_loss_temperature(torch.tensor(0.5))
        tensor(0.5000)
        >>> check_loss_temperature(torch.tensor([0.5]))
        Traceback (most recent call last):
        ...
        ValueError: temperature must be a finite number > 0 or a 0-dim floating-point tensor, got a tensor of shape (1,) and dtype torch.float32
    """
    if isinstance(temperature, Tensor):
        if temperature.ndim != 0 or not temperature.is_floating_point():
            raise ValueError(
                f"{name} must be a finite number > 0 or a 0-dim floating-point tensor, got a "
                f"tensor of shape {tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        return temperature
    return check_temperature(temperature, name)


def softmax_with_temperature(logits: Tensor, temperature: float = 1.0, dim: int = -1) -> Tensor:
    r"""Softmax of temperature-scaled logits.

    .. math::

        \mathrm{softmax}(z / T)_k = \frac{\exp(z_k / T)}{\sum_j \exp(z_j / T)}

    ``T = 1`` is the ordinary softmax; ``T -> inf`` tends to the uniform distribution and
    ``T -> 0`` to the one-hot of the arg-max.

    Args:
        logits: unnormalised scores of any shape, e.g. (N, K).
        temperature: ``T``, a finite number > 0.
        dim: dimension along which the probabilities sum to 1.

    Returns:
        Probabilities with the shape of ``logits``.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0.

    Examples:
        >>> logits = torch.tensor([[1.0, 2.0, 3.0]])
        >>> softmax_with_temperature(logits).round(decimals=4)
        tensor([[0.0900, 0.2447, 0.6652]])
        >>> softmax_with_temperature(logits, temperature=100.0).round(decimals=2)
        tensor([[0.3300, 0.3300, 0.3400]])
    """
    temperature = check_temperature(temperature)
    return torch.softmax(logits / temperature, dim=dim)


def log_softmax_with_temperature(logits: Tensor, temperature: float = 1.0, dim: int = -1) -> Tensor:
    r"""Log-softmax of temperature-scaled logits, computed stably (log-sum-exp).

    .. math::

        \log \mathrm{softmax}(z / T)_k = z_k / T - \log \sum_j \exp(z_j / T)

    Args:
        logits: unnormalised scores of any shape, e.g. (N, K).
        temperature: ``T``, a finite number > 0.
        dim: dimension along which ``exp`` of the result sums to 1.

    Returns:
        Log-probabilities with the shape of ``logits``.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0.

    Examples:
        >>> logits = torch.tensor([[0.0, 1000.0]])
        >>> log_softmax_with_temperature(logits, temperature=2.0)
        tensor([[-500.,    0.]])
    """
    temperature = check_temperature(temperature)
    return torch.log_softmax(logits / temperature, dim=dim)


def sigmoid(logits: Tensor) -> Tensor:
    r"""Logistic sigmoid, element-wise: ``sigmoid(x) = 1 / (1 + exp(-x))``, in (0, 1).

    A thin wrapper of :func:`torch.sigmoid`, exported so that model heads can name their
    output activation from one place.

    Args:
        logits: any shape.

    Returns:
        A tensor of the same shape.

    Examples:
        >>> sigmoid(torch.tensor([0.0, 2.0])).round(decimals=4)
        tensor([0.5000, 0.8808])
    """
    return torch.sigmoid(logits)


def tanh(inputs: Tensor) -> Tensor:
    r"""Hyperbolic tangent, element-wise: ``tanh(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x))``.

    Equals ``2 * sigmoid(2x) - 1``, in (-1, 1). A thin wrapper of :func:`torch.tanh`.

    Args:
        inputs: any shape.

    Returns:
        A tensor of the same shape.

    Examples:
        >>> tanh(torch.tensor([0.0, 1.0])).round(decimals=4)
        tensor([0.0000, 0.7616])
    """
    return torch.tanh(inputs)


class SoftmaxWithTemperature(nn.Module):
    r"""Module form of :func:`softmax_with_temperature`: ``softmax(z / T)`` along ``dim``.

    Args:
        temperature: ``T``, a finite number > 0.
        dim: dimension along which the probabilities sum to 1.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0.

    Shape:
        - Input: any shape, e.g. (N, K).
        - Output: same shape as the input.

    Examples:
        >>> softmax = SoftmaxWithTemperature(temperature=2.0)
        >>> softmax(torch.tensor([[0.0, 2.0]])).round(decimals=4)
        tensor([[0.2689, 0.7311]])
        >>> SoftmaxWithTemperature(temperature=0.0)
        Traceback (most recent call last):
        ...
        ValueError: temperature must be a finite number > 0, got 0.0
    """

    def __init__(self, temperature: float = 1.0, dim: int = -1) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.dim = dim

    def forward(self, logits: Tensor) -> Tensor:
        return softmax_with_temperature(logits, self.temperature, self.dim)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, dim={self.dim}"
