r"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"): views -> backbone -> projection head -> NT-Xent.

Every one of the ``V N`` embeddings (``V`` views of ``N`` images, ``V = 2`` by default) is an
anchor; its positives are the other views of its image and its negatives every other
embedding, of all ranks under DDP (``loss.gather_distributed``):

.. math::

    \mathcal{L} = \frac{1}{VN} \sum_{i} -\frac{1}{V - 1} \sum_{p \in P(i)}
        \log \frac{\exp(s_{ip} / T)}{\sum_{k \ne i} \exp(s_{ik} / T)}

with :math:`s` the cosine similarity (:func:`contrastive.losses.multi_view_info_nce`). With
``loss=dcl`` / ``loss=dclw`` the positives leave the denominator (Yeh et al. 2022).

Multi-crop (``augment.local_views``; VISSL's multi-crop SimCLR, SwAV's pairing): the local
views are anchors only. Every view, global or local, is an anchor whose positives are the
*global* views of its image (itself excluded) and whose negatives are the global views of
the other images; the candidates are the global views alone
(:func:`contrastive.losses.multi_crop_info_nce`).
"""

from __future__ import annotations

from torch import Tensor

from contrastive.errors import ConfigError
from contrastive.methods.base import ContrastiveMethod, Step


class SimCLR(ContrastiveMethod):
    """SimCLR pretraining: the shared parts (:class:`ContrastiveMethod`) and one loss."""

    def check_setup(self, global_batch: int) -> None:
        check_weighting(self)

    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        features, embeddings = self.project(views)  # (V, B, F), (V, B, D)
        if local is not None:  # one backbone pass per resolution
            loss = self.loss.forward_multi_crop(embeddings, self.project(local)[1])
        elif embeddings.shape[0] == 2:
            loss = self.loss(embeddings[0], embeddings[1])
        else:
            loss = self.loss.forward_views(embeddings)
        return Step(loss, features[0], embeddings)


def check_weighting(method: ContrastiveMethod) -> None:
    """DCLW's weight needs one positive per anchor: two views, no local views, no labels."""
    weighting = method.loss.weighting
    recipe = method.recipe
    if weighting is not None and (
        method.requires_labels or recipe.local_views or recipe.num_views != 2
    ):
        raise ConfigError(
            f"loss.weighting={weighting!r} (DCLW) needs one positive per anchor: 2 views "
            f"(augment.num_views={recipe.num_views}), no local views "
            f"(augment.local_views={recipe.local_views}) and no labels "
            f"(method={type(method).__name__.lower()}); use loss=dcl"
        )
