"""Linear probe: ``python scripts/linear_probe.py pretrained=<run dir> [hydra overrides]``.

The job reads top-down in ``contrastive/jobs/linear_probe.py``; its config is ``conf/linear_probe.yaml``.
"""

from contrastive.cli import linear_probe_main

if __name__ == "__main__":
    linear_probe_main()
