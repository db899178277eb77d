r"""Knowledge-distillation loss (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.losses.activations import _check_temperature

__all__ = ["KLDivergenceLoss", "kl_divergence"]


def kl_divergence(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    r"""Temperature-scaled KL divergence from the teacher's to the student's distribution.

    .. math::

        \mathcal{L} = \frac{T^2}{N} \sum_{n=1}^{N} \sum_{k=1}^{K}
            q_{nk} \left( \log q_{nk} - \log p_{nk} \right),
        \qquad q_n = \mathrm{softmax}(t_n / T),\; p_n = \mathrm{softmax}(s_n / T)

    i.e. :math:`T^2 \, \mathrm{KL}(q \,\|\, p)` summed over classes and averaged over the batch
    (Hinton et al. 2015). The :math:`T^2` factor keeps the gradient magnitude roughly
    independent of ``T``, so the term can be mixed with a hard-label loss.

    The teacher logits are **not** detached here: to train only the student, pass
    ``teacher_logits.detach()`` (or compute them under ``torch.no_grad()``); the caller
    decides.

    Args:
        student_logits: (N, K) logits ``s`` of the student.
        teacher_logits: (N, K) logits ``t`` of the teacher.
        temperature: ``T``, a finite number > 0.

    Returns:
        Scalar loss, >= 0, and 0 when both logits are equal.

    Raises:
        ValueError: if the shapes differ or the temperature is not a finite number > 0.

    Examples:
        >>> import torch
        >>> student = torch.tensor([[0.0, 0.0]])
        >>> teacher = torch.tensor([[0.0, 2.0]])
        >>> round(kl_divergence(student, teacher).item(), 4)
        0.3278
        >>> kl_divergence(teacher, teacher, temperature=4.0).item()
        0.0
    """
    temperature = _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(
            "student_logits and teacher_logits must be (N, K) tensors of the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    student_log_probs = F.log_softmax(student_logits / temperature, dim=1)  # (N, K)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=1)  # (N, K)
    divergence = F.kl_div(
        student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True
    )
    return temperature**2 * divergence


class KLDivergenceLoss(nn.Module):
    r"""Module form of :func:`kl_divergence`: :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T) \,\|\,
    \mathrm{softmax}(s/T))`, batch mean.

    Args:
        temperature: ``T``, a finite number > 0.

    Raises:
        ValueError: if ``temperature`` is not a finite number > 0.

    Shape:
        - ``student_logits``: (N, K); ``teacher_logits``: (N, K) -> scalar.

    Examples:
        >>> import torch
        >>> criterion = KLDivergenceLoss(temperature=2.0)
        >>> logits = torch.tensor([[1.0, 2.0, 3.0]])
        >>> criterion(logits, logits).item()
        0.0
        >>> KLDivergenceLoss(temperature=float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: temperature must be a finite number > 0, got nan
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kl_divergence(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
