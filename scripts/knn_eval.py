"""kNN evaluation: ``python scripts/knn_eval.py pretrained=<run dir> [hydra overrides]``.

The job reads top-down in ``contrastive/jobs/knn.py`` (``knn_eval``); its config is
``conf/knn.yaml``.
"""

from contrastive.cli import knn_main

if __name__ == "__main__":
    knn_main()
