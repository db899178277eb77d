"""Callbacks that watch pretraining: kNN accuracy, an online probe, throughput."""

from contrastive.callbacks.knn import KNNMonitor, knn_predict
from contrastive.callbacks.online_probe import OnlineLinearProbe
from contrastive.callbacks.throughput import ViewThroughput

__all__ = ["KNNMonitor", "OnlineLinearProbe", "ViewThroughput", "knn_predict"]
