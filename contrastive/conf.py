"""Where the Hydra configs live: ``conf/`` beside the package (a source checkout or an
editable install) or inside it (a wheel that ships them)."""

from __future__ import annotations

from pathlib import Path


def conf_dir() -> Path:
    package = Path(__file__).resolve().parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "pretrain.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"contrastive's conf/ folder is missing (looked beside {package})")
