"""The kNN job: the pretraining monitor's kNN accuracy, on a saved backbone.

``scripts/knn_eval.py`` and ``contrastive-knn`` call :func:`knn_eval` (``conf/knn.yaml``).
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from contrastive.checkpoints import load_pretrained
from contrastive.jobs import checks
from contrastive.jobs.run import Run
from contrastive.methods.linear_probe import extract_features
from contrastive.metrics import knn_top1
from contrastive.transforms import ImageInputs


def knn_eval(cfg: DictConfig) -> dict[str, Any]:
    """kNN accuracy of a saved backbone: cosine similarity, ``k`` neighbours,
    ``exp(s / temperature)`` votes, the same bank and test set as the monitor, as
    ``knn/test_top1``."""
    with Run(cfg) as run:
        pretrained = load_pretrained(cfg.pretrained, trust=bool(cfg.trust_checkpoint))
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.prepare_data()
        checks.check_classes(datamodule)
        checks.check_data(datamodule, pretrained)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        encoder = nn.Sequential(ImageInputs(pretrained.preprocessing()), pretrained.backbone).to(
            device
        )
        bank_loader, test_loader = datamodule.val_dataloader()
        bank, bank_labels = extract_features(encoder, bank_loader)
        test, test_labels = extract_features(encoder, test_loader)
        k, temperature = int(cfg.knn.k), float(cfg.knn.temperature)
        top1, voters = knn_top1(bank, bank_labels, test, test_labels, k, temperature)
        metrics: dict[str, Any] = {
            "knn/test_top1": float(top1),
            "knn/k": k,
            "knn/temperature": temperature,
            "knn/bank_samples": voters,
            "knn/test_samples": int(test_labels.numel()),
        }
        run.logger(pretrained.provenance)
        return run.finish(metrics, f"kNN ({pretrained.path})", ("knn/test_top1",))
