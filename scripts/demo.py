"""The demo chain: ``python scripts/demo.py [pretrain overrides] [--probe ...] [--distill ...]``.

Pretrain -> linear probe (and the raw-pixel baseline) -> distil; the table lands in
``results.md`` of the demo directory. The chain reads top-down in ``contrastive/jobs/demo.py``.
"""

from contrastive.jobs.demo import main

if __name__ == "__main__":
    main()
