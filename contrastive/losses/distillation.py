r"""Distillation losses: logits (Hinton et al., 2015, "Distilling the Knowledge in a Neural
Network") and representations (Fang et al., 2021, "SEED: Self-supervised Distillation for
Visual Representation")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.losses.activations import check_temperature

__all__ = ["KLDivergenceLoss", "kl_divergence", "seed_loss"]


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
    temperature = check_temperature(temperature)
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
        self.temperature = check_temperature(temperature)

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return kl_divergence(student_logits, teacher_logits, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def seed_loss(
    student: Tensor,
    teacher: Tensor,
    anchors: Tensor,
    student_temperature: float = 0.07,
    teacher_temperature: float = 0.01,
) -> Tensor:
    r"""SEED's representation-distillation loss (Fang et al., 2021).

    Student and teacher embeddings are compared with the same anchor set: the
    :math:`M` given anchors plus the teacher's own embedding of each sample. With
    :math:`\hat{x} = x / \lVert x \rVert`, anchors :math:`a_1 .. a_M` (normalised) and
    :math:`a_{M+1} = \hat{t}_n`:

    .. math::

        q_{nj} = \mathrm{softmax}_j\big(\hat{t}_n^\top a_j / \tau_T\big),\qquad
        p_{nj} = \mathrm{softmax}_j\big(\hat{s}_n^\top a_j / \tau_S\big),\qquad
        \mathcal{L} = \frac{1}{N} \sum_n \sum_{j=1}^{M+1} q_{nj}
            \left(\log q_{nj} - \log p_{nj}\right)

    i.e. :math:`\mathrm{KL}(q \,\|\, p)`, batch mean: the cross-entropy SEED minimises
    minus the teacher's entropy, which has no gradient for the student. Only the student
    gets a gradient; teacher and anchors are treated as constants.

    Args:
        student: (N, D) student embeddings :math:`s` (projected to the teacher's width).
        teacher: (N, D) teacher embeddings :math:`t`.
        anchors: (M, D) anchor embeddings (a queue of past teacher embeddings in SEED).
        student_temperature: :math:`\tau_S`, a finite number > 0.
        teacher_temperature: :math:`\tau_T`, a finite number > 0 (usually sharper).

    Returns:
        Scalar loss, >= 0; 0 when the student's embeddings equal the teacher's and both
        temperatures are equal.

    Examples:
        >>> import torch
        >>> emb, anchors = torch.eye(3)[:2], torch.eye(3)
        >>> seed_loss(emb, emb, anchors, 0.5, 0.5).abs().item() < 1e-6
        True
    """
    student_temperature = check_temperature(student_temperature)
    teacher_temperature = check_temperature(teacher_temperature)
    if student.ndim != 2 or student.shape != teacher.shape:
        raise ValueError(
            "student and teacher embeddings must be (N, D) tensors of the same shape, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    if anchors.ndim != 2 or anchors.shape[1] != student.shape[1]:
        raise ValueError(
            f"anchors must be (M, {student.shape[1]}) to match the embeddings, got "
            f"{tuple(anchors.shape)}"
        )
    student = F.normalize(student, dim=1)
    teacher = F.normalize(teacher.detach(), dim=1)
    anchors = F.normalize(anchors.detach(), dim=1)
    own = (teacher * teacher).sum(dim=1, keepdim=True)  # (N, 1), 1 up to rounding
    teacher_logits = torch.cat([teacher @ anchors.T, own], dim=1)  # (N, M + 1)
    student_logits = torch.cat([student @ anchors.T, (student * teacher).sum(1, True)], dim=1)
    teacher_log_probs = F.log_softmax(teacher_logits / teacher_temperature, dim=1)
    student_log_probs = F.log_softmax(student_logits / student_temperature, dim=1)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
