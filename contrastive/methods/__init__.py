"""The LightningModules: a pretraining method per file, and the evaluation modules."""

from contrastive.methods.distillation import LogitDistillation, RepresentationDistillation
from contrastive.methods.linear_probe import LinearEvaluation, LinearProbe
from contrastive.methods.simclr import SimCLR

__all__ = [
    "LinearEvaluation",
    "LinearProbe",
    "LogitDistillation",
    "RepresentationDistillation",
    "SimCLR",
]
