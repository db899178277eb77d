r"""MoCo v3 (Chen, Xie and He 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers"): a predictor on the online side, a momentum key encoder, in-batch keys (of
every rank) as negatives, no queue.

With queries :math:`q = h(g(f(x_i)))` (``h`` the predictor) and keys
:math:`k = g_m(f_m(x_j))` of views ``i != j``, both L2-normalised, and ``M`` the keys of the
global batch:

.. math::

    \ell_n = -\log \frac{\exp(q_n \cdot k_n / T)}{\sum_{m=1}^{M} \exp(q_n \cdot k_m / T)}

averaged over ``n`` and the ordered pairs of views (symmetrised;
:meth:`contrastive.losses.InfoNCELoss.forward_pairs`); local views (multi-crop) are queries
against the global views' keys (:func:`contrastive.methods.views.view_pairs`). The paper's loss is the sum over
the two orders scaled by ``2T``; here it is their mean, which only rescales the learning
rate. The key encoder is the EMA of the backbone and projection head with momentum on a
cosine schedule from 0.99 to 1 (:func:`contrastive.methods.momentum.momentum_at`); the
paper synchronises BatchNorm instead of shuffling it (``trainer.sync_batchnorm=true`` on
GPUs), so ``shuffle_bn`` defaults to ``none``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from contrastive.heads import output_dim
from contrastive.methods.base import ContrastiveMethod, Step
from contrastive.methods.moco_v2 import exported, key_encoder, make_keys, update_keys
from contrastive.methods.views import view_pairs


class MoCoV3(ContrastiveMethod):
    """MoCo v3 pretraining: MoCo v2's momentum encoder, a predictor, no queue.

    Args:
        predictor: builds the predictor MLP from the embedding width (a Hydra partial).
        momentum, momentum_end, shuffle_bn, shuffle_bn_groups: the key encoder's
            (:class:`~contrastive.methods.momentum.MomentumEncoder`).
        export: which backbone ``backbone.pt`` holds: ``query`` (online) or ``momentum``.
        **shared: the arguments of :class:`~contrastive.methods.base.ContrastiveMethod`.
    """

    def __init__(
        self,
        predictor: Callable[[int], nn.Module],
        momentum: float = 0.99,
        momentum_end: float | None = 1.0,
        shuffle_bn: str = "none",
        shuffle_bn_groups: int = 4,
        export: str = "query",
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.momentum_encoder = key_encoder(
            self, momentum, momentum_end, shuffle_bn, shuffle_bn_groups, export
        )
        self.predictor = predictor(output_dim(self.projection_head))

    def trainable(self) -> nn.Module:
        return nn.ModuleList([self.backbone, self.projection_head, self.predictor])

    def exported_backbone(self) -> nn.Module:
        return exported(self)

    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        momentum = update_keys(self)
        features, embeddings = self.project(views)  # (V, B, F), (V, B, D)
        queries = self.predict(embeddings)
        if local is not None:  # local views are queries only, against the global keys
            queries = torch.cat([queries, self.predict(self.project(local)[1])])
        keys = make_keys(self, views)  # (V, B, D), no gradient
        pairs = view_pairs(views.shape[0], queries.shape[0] - views.shape[0])
        loss = torch.stack([self.loss.forward_pairs(queries[i], keys[j]) for i, j in pairs]).mean()
        return Step(loss, features[0], embeddings, {"train/momentum": momentum})

    def predict(self, embeddings: Tensor) -> Tensor:
        """The predictor on embeddings ``(V, B, D)``."""
        return self.predictor(embeddings.flatten(0, 1)).view_as(embeddings)
