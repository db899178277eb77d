r"""Supervised contrastive learning (Khosla et al. 2020, "Supervised Contrastive Learning"):
SimCLR's views and encoder, with the class labels choosing the positives.

Every one of the ``V N`` embeddings is an anchor; its positives :math:`P(i)` are all other
embeddings (any view) of images of its class, gathered with their labels from every rank
under DDP; self leaves the denominator; anchors without a positive leave the mean
(:math:`\mathcal{L}_{out}`, the paper's better variant):

.. math::

    \mathcal{L} = \frac{1}{|A|} \sum_{i \in A} -\frac{1}{|P(i)|} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne i} \exp(s_{ik} / T)}

(:func:`contrastive.losses.supcon_loss`). The labels come from the datamodule; an
unlabelled dataset is refused before any work. An unlabelled sample of a partly labelled
set (label ``-1``, as STL-10's unlabelled split) is a class of its own: its positives are
its other views, as in SimCLR.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from contrastive.methods.base import ContrastiveMethod, Step
from contrastive.methods.simclr import check_weighting


def own_class_if_unlabelled(labels: Tensor, rank: int) -> Tensor:
    """``labels`` with each ``-1`` replaced by an id no other sample of any rank has."""
    unique = -2 - rank * 2**40 - torch.arange(labels.shape[0], device=labels.device)
    return torch.where(labels < 0, unique, labels)


class SupCon(ContrastiveMethod):
    """SupCon pretraining: SimCLR's parts, the labels of the batch as positives."""

    requires_labels: ClassVar[bool] = True

    def check_setup(self, global_batch: int) -> None:
        check_weighting(self)

    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        features, embeddings = self.project(views)  # (V, B, F), (V, B, D)
        labels = own_class_if_unlabelled(labels, self.global_rank)
        if local is not None:  # local views: anchors against the global views' positives
            loss = self.loss.forward_multi_crop(embeddings, self.project(local)[1], labels)
        else:
            loss = self.loss.forward_views(embeddings, labels)
        return Step(loss, features[0], embeddings)
