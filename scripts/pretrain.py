"""SimCLR pretraining: ``python scripts/pretrain.py [hydra overrides]``.

The job itself reads top-down in ``contrastive/jobs/pretrain.py``; configs live in ``conf/``.
"""

from contrastive.cli import pretrain_main

if __name__ == "__main__":
    pretrain_main()
