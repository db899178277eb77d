"""Callbacks that watch pretraining: kNN accuracy, an online probe, throughput, training
health, pictures, progress, and stopping and resuming without losing work."""

from contrastive.callbacks.checkpoint import BestCheckpoint, LastCheckpoint
from contrastive.callbacks.health import TrainingHealth
from contrastive.callbacks.knn import KNNMonitor
from contrastive.callbacks.media import MediaLogger
from contrastive.callbacks.nonfinite import NonFiniteGuard
from contrastive.callbacks.online_probe import OnlineLinearProbe
from contrastive.callbacks.preemption import Preempted, Preemption, RNGStates
from contrastive.callbacks.progress import LogProgress, progress_bar
from contrastive.callbacks.throughput import ViewThroughput

__all__ = [
    "BestCheckpoint",
    "KNNMonitor",
    "LastCheckpoint",
    "LogProgress",
    "MediaLogger",
    "NonFiniteGuard",
    "OnlineLinearProbe",
    "Preempted",
    "Preemption",
    "RNGStates",
    "TrainingHealth",
    "ViewThroughput",
    "progress_bar",
]
