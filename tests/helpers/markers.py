"""Skip markers for what a machine may lack."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion_mnist = pytest.mark.skipif(
    not REAL_FASHION_MNIST.exists(), reason="Fashion-MNIST not installed (make data)"
)
