"""Losses and output activations: pure functions doing the maths plus thin validating modules.

Pure torch: nothing here imports Lightning or Hydra.
"""

from contrastive.losses.activations import (
    SoftmaxWithTemperature,
    check_temperature,
    log_softmax_with_temperature,
    sigmoid,
    softmax_with_temperature,
    tanh,
)
from contrastive.losses.classification import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    NLLLoss,
    binary_cross_entropy_with_logits,
    cross_entropy,
    nll_loss,
)
from contrastive.losses.dcl import dcl_loss
from contrastive.losses.distillation import KLDivergenceLoss, kl_divergence, seed_loss
from contrastive.losses.info_nce import (
    contrastive_loss,
    info_nce,
    multi_view_info_nce,
    supcon_loss,
)
from contrastive.losses.info_nce_loss import InfoNCELoss
from contrastive.losses.moco import moco_loss
from contrastive.losses.regression import L2Loss, l2_loss

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "InfoNCELoss",
    "KLDivergenceLoss",
    "L2Loss",
    "NLLLoss",
    "SoftmaxWithTemperature",
    "binary_cross_entropy_with_logits",
    "check_temperature",
    "contrastive_loss",
    "cross_entropy",
    "dcl_loss",
    "info_nce",
    "kl_divergence",
    "l2_loss",
    "log_softmax_with_temperature",
    "moco_loss",
    "multi_view_info_nce",
    "nll_loss",
    "seed_loss",
    "sigmoid",
    "softmax_with_temperature",
    "supcon_loss",
    "tanh",
]
