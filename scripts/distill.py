"""Distillation: ``python scripts/distill.py teacher=<linear-probe run dir> [hydra overrides]``.

The job reads top-down in ``contrastive/jobs/distill.py``; its config is ``conf/distill.yaml``.
"""

from contrastive.cli import distill_main

if __name__ == "__main__":
    distill_main()
