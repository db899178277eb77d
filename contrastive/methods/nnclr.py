r"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations"): the positive of a view is the nearest
neighbour of its embedding in a support set of past embeddings.

With :math:`z = g(f(x))` (L2-normalised), predictions :math:`p = h(z)` and
:math:`\mathrm{NN}(z)` the support-set row of highest cosine similarity to ``z``, for views
``i != j`` and the global batch's ``M`` predictions:

.. math::

    \ell_n = -\log \frac{\exp(\mathrm{NN}(z^i_n) \cdot p^j_n / T)}
        {\sum_{m=1}^{M} \exp(\mathrm{NN}(z^i_n) \cdot p^j_m / T)}

averaged over ``n`` and the ordered pairs of views
(:meth:`contrastive.losses.InfoNCELoss.forward_pairs`); with local views (multi-crop) the
neighbours of the global views are the positives of every other view's prediction
(:func:`contrastive.methods.views.view_pairs`). The neighbours are constants:
gradients flow through the prediction (query) side only, as in the paper. After the loss
the first view's embeddings, gathered from every rank, are written over the support set's
oldest rows (:class:`~contrastive.methods.queue.EmbeddingQueue`); until it holds any, a
view's own embedding stands in for its neighbour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.heads import output_dim
from contrastive.methods.base import ContrastiveMethod, Step
from contrastive.methods.queue import EmbeddingQueue
from contrastive.methods.views import view_pairs


def nearest_neighbours(embeddings: Tensor, support: Tensor) -> Tensor:
    """The row of ``support`` ``(K, D)`` most cosine-similar to each of ``embeddings``
    ``(N, D)`` (both L2-normalised); ``embeddings`` itself when ``support`` is empty."""
    if support.shape[0] == 0:
        return embeddings
    similarities = embeddings @ support.T  # (N, K)
    return support[similarities.argmax(dim=1)]  # (N, D)


class NNCLR(ContrastiveMethod):
    """NNCLR pretraining.

    Args:
        predictor: builds the predictor MLP from the embedding width (a Hydra partial).
        queue_length: size of the support set, a multiple of the global batch.
        **shared: the arguments of :class:`~contrastive.methods.base.ContrastiveMethod`.
    """

    def __init__(
        self, predictor: Callable[[int], nn.Module], queue_length: int = 8192, **shared: Any
    ) -> None:
        super().__init__(**shared)
        self.predictor = predictor(output_dim(self.projection_head))
        self.queue = EmbeddingQueue(queue_length, output_dim(self.projection_head))

    def trainable(self) -> nn.Module:
        return nn.ModuleList([self.backbone, self.projection_head, self.predictor])

    def check_setup(self, global_batch: int) -> None:
        self.queue.check(global_batch, 1)

    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        features, embeddings = self.project(views)  # (V, B, F), (V, B, D)
        predictions = self.predict(embeddings)  # (V, B, D)
        if local is not None:  # local views are predictions only, against global neighbours
            predictions = torch.cat([predictions, self.predict(self.project(local)[1])])
        with torch.no_grad():
            normalised = F.normalize(embeddings.detach().float(), dim=-1)  # (V, B, D)
            support = self.queue.entries().to(normalised.dtype)
            neighbours = [nearest_neighbours(view, support) for view in normalised]
        pairs = view_pairs(views.shape[0], predictions.shape[0] - views.shape[0])
        # pair (a, g): the neighbour of global view g is the positive of view a's prediction
        loss = torch.stack(
            [self.loss.forward_pairs(neighbours[g], predictions[a]) for a, g in pairs]
        )
        self.queue.push(normalised[0])
        return Step(loss.mean(), features[0], embeddings)

    def predict(self, embeddings: Tensor) -> Tensor:
        """The predictor on embeddings ``(V, B, D)``."""
        return self.predictor(embeddings.flatten(0, 1)).view_as(embeddings)
