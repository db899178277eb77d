"""A markdown report (results table, curves, pictures) of run directories, without W&B:
``python scripts/report.py RUN_DIR [RUN_DIR ...] --out DIR``. Code: ``contrastive/report.py``.
"""

from contrastive.report import main

if __name__ == "__main__":
    main()
