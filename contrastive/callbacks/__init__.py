"""Callbacks that watch pretraining: kNN accuracy, an online probe, throughput, training
health, and pictures."""

from contrastive.callbacks.health import TrainingHealth
from contrastive.callbacks.knn import KNNMonitor, knn_predict
from contrastive.callbacks.media import MediaLogger
from contrastive.callbacks.online_probe import OnlineLinearProbe
from contrastive.callbacks.throughput import ViewThroughput

__all__ = [
    "KNNMonitor",
    "MediaLogger",
    "OnlineLinearProbe",
    "TrainingHealth",
    "ViewThroughput",
    "knn_predict",
]
