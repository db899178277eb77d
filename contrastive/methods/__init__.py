"""The LightningModules: a pretraining method per file, built on the shared parts of
``base.py`` (views, heads, logging, optimiser), and the evaluation modules."""

from contrastive.methods.base import ContrastiveMethod
from contrastive.methods.distillation import LogitDistillation, RepresentationDistillation
from contrastive.methods.linear_probe import LinearEvaluation, LinearProbe
from contrastive.methods.moco_v2 import MoCoV2
from contrastive.methods.moco_v3 import MoCoV3
from contrastive.methods.nnclr import NNCLR
from contrastive.methods.simclr import SimCLR
from contrastive.methods.supcon import SupCon

METHODS = {"simclr": SimCLR, "moco_v2": MoCoV2, "moco_v3": MoCoV3, "nnclr": NNCLR, "supcon": SupCon}

__all__ = [
    "METHODS",
    "NNCLR",
    "ContrastiveMethod",
    "LinearEvaluation",
    "LinearProbe",
    "LogitDistillation",
    "MoCoV2",
    "MoCoV3",
    "RepresentationDistillation",
    "SimCLR",
    "SupCon",
]
