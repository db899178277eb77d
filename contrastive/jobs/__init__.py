"""The jobs, one file each, over the shared plumbing of :mod:`contrastive.jobs.run` and the
pre-flight checks of :mod:`contrastive.jobs.checks`; no job imports another.

- :mod:`~contrastive.jobs.pretrain`: pretraining (``contrastive-pretrain``)
- :mod:`~contrastive.jobs.linear_probe`: linear evaluation (``contrastive-linear-probe``)
- :mod:`~contrastive.jobs.knn`: kNN evaluation (``contrastive-knn``)
- :mod:`~contrastive.jobs.distill`: distillation (``contrastive-distill``)
- :mod:`~contrastive.jobs.demo`: the demo chain of all of them (``scripts/demo.py``)
"""
