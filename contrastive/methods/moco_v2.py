r"""MoCo v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning"):
queries from the online encoder, keys from its momentum copy, negatives from a queue of
past keys.

For views ``i != j`` of a batch of ``N`` images (both orders: the loss is symmetrised),
query :math:`q = g(f(x_i))` and key :math:`k = g_m(f_m(x_j))`, both L2-normalised, the
queue :math:`\{u_1 \dots u_K\}`:

.. math::

    \ell_n = -\log \frac{\exp(q_n \cdot k_n / T)}
        {\exp(q_n \cdot k_n / T) + \sum_{j=1}^{K} \exp(q_n \cdot u_j / T)}

averaged over ``n`` and over the ordered pairs of views
(:func:`contrastive.losses.moco_loss`; ``loss=dcl`` drops the positive from the
denominator). Other keys of the same batch are not negatives. With local views
(multi-crop) every view, global or local, is a query against the keys of the global views
but its own (:func:`contrastive.methods.views.view_pairs`); keys are made of global views
only. After the loss, the keys of
every view, gathered from every rank, are written over the queue's oldest rows
(:class:`~contrastive.methods.queue.EmbeddingQueue`). The key encoder is the EMA of the
online backbone and head, updated before each step's keys, with momentum 0.999 and
shuffled BatchNorm (``shuffle_bn="auto"``: across ranks under DDP, in 4 sub-batches per
view on one process, not at all where ``trainer.sync_batchnorm=true`` has synchronised the
BatchNorms; :class:`~contrastive.methods.momentum.MomentumEncoder`). ``loss=dcl`` is
decoupled; DCLW's weighting is refused (it is not defined for a queue).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from contrastive.errors import ConfigError
from contrastive.heads import output_dim
from contrastive.losses import moco_loss
from contrastive.methods import optimization
from contrastive.methods.base import ContrastiveMethod, Step
from contrastive.methods.momentum import MomentumEncoder, grouped
from contrastive.methods.queue import EmbeddingQueue
from contrastive.methods.views import view_pairs


class MoCoV2(ContrastiveMethod):
    """MoCo v2 pretraining.

    Args:
        queue_length: negatives kept, a multiple of the global batch (refused otherwise).
        momentum, momentum_end, shuffle_bn, shuffle_bn_groups: the key encoder's
            (:class:`~contrastive.methods.momentum.MomentumEncoder`).
        export: which backbone ``backbone.pt`` holds: ``query`` (online) or ``momentum``.
        **shared: the arguments of :class:`~contrastive.methods.base.ContrastiveMethod`.
    """

    def __init__(
        self,
        queue_length: int = 4096,
        momentum: float = 0.999,
        momentum_end: float | None = None,
        shuffle_bn: str = "auto",
        shuffle_bn_groups: int = 4,
        export: str = "query",
        **shared: Any,
    ) -> None:
        super().__init__(**shared)
        self.momentum_encoder = key_encoder(
            self, momentum, momentum_end, shuffle_bn, shuffle_bn_groups, export
        )
        self.queue = EmbeddingQueue(queue_length, output_dim(self.projection_head))

    def exported_backbone(self) -> nn.Module:
        return exported(self)

    def check_setup(self, global_batch: int) -> None:
        if self.loss.weighting is not None:
            raise ConfigError(
                f"loss.weighting={self.loss.weighting!r} (DCLW) is not defined for MoCo v2's "
                "queue loss; use loss=dcl (decoupled, unweighted) or loss=info_nce"
            )
        self.queue.check(global_batch, self.recipe.num_views)

    def contrastive_step(self, views: Tensor, labels: Tensor, local: Tensor | None) -> Step:
        momentum = update_keys(self)
        features, queries = self.queries(views)  # (V, B, F), (V, B, D)
        if local is not None:  # local views are queries only, against the global keys
            queries = torch.cat([queries, self.queries(local)[1]])  # (V + L, B, D)
        keys = make_keys(self, views)  # (V, B, D), no gradient
        negatives = self.queue.entries().clone()  # (K, D): the queue changes below
        pairs = view_pairs(views.shape[0], queries.shape[0] - views.shape[0])
        temperature, decoupled = self.loss.current_temperature(), self.loss.decoupled
        loss = torch.stack(
            [moco_loss(queries[i], keys[j], negatives, temperature, decoupled) for i, j in pairs]
        ).mean()
        self.queue.push(keys.flatten(0, 1))  # the global views' keys only
        return Step(loss, features[0], queries[: views.shape[0]], {"train/momentum": momentum})

    def queries(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """Online features ``(V, B, F)`` and embeddings ``(V, B, D)`` of views of one
        resolution, in the sub-batches of the shuffled BatchNorm when it needs them."""
        num_views, batch_size = views.shape[:2]
        groups = self.momentum_encoder.online_groups(num_views, self.trainer.world_size)
        features = grouped(self.embed, views.flatten(0, 1), groups)  # (V B, F)
        embeddings = grouped(self.projection_head, features, groups)  # (V B, D)
        return features.view(num_views, batch_size, -1), embeddings.view(num_views, batch_size, -1)


# --- the momentum-encoder wiring MoCo v2 and v3 share --------------------------------------
def key_encoder(
    method: ContrastiveMethod,
    momentum: float,
    momentum_end: float | None,
    shuffle_bn: str,
    shuffle_bn_groups: int,
    export: str,
) -> MomentumEncoder:
    """The EMA of ``method``'s backbone and projection head."""
    if export not in ("query", "momentum"):
        raise ValueError(f"method.export must be query or momentum, got {export!r}")
    method.export = export  # type: ignore[assignment]
    modules = {"backbone": method.backbone, "projection_head": method.projection_head}
    return MomentumEncoder(modules, momentum, momentum_end, shuffle_bn, shuffle_bn_groups)


def exported(method: Any) -> nn.Module:
    if method.export == "momentum":
        return method.momentum_encoder.encoder.backbone
    return method.backbone


def update_keys(method: Any) -> float:
    """The step's EMA update, before its keys (as MoCo does), once per optimiser step (with
    ``trainer.accumulate_grad_batches=k`` the k micro-batches of a step share it: the online
    weights change once a step); returns the momentum used."""
    encoder: MomentumEncoder = method.momentum_encoder
    total = 0
    if encoder.scheduled:
        if getattr(method, "_total_steps", None) is None:
            method._total_steps = optimization.total_steps(method.trainer)
        total = method._total_steps
    modules = {"backbone": method.backbone, "projection_head": method.projection_head}
    return encoder.update(modules, method.global_step, total)


def make_keys(method: Any, views: Tensor) -> Tensor:
    """The key encoder's embeddings of ``views``; the shuffle's permutation comes from the
    seed and the step (the same on every rank and after a resume)."""
    seed = 1_000_003 * method.view_stream.augment_seed + method.global_step
    generator = torch.Generator().manual_seed(seed)
    world = method.trainer.world_size
    return method.momentum_encoder.keys(views, world, generator, method.channels_last)
