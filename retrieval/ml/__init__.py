"""The SE-CBIR machine-learning library: plain PyTorch / timm / NumPy, no Django imports.

Importing this package first makes torchvision importable on CPU-only torch (see compat).
"""
from __future__ import annotations

from retrieval.ml.compat import ensure_torchvision_ops

ensure_torchvision_ops()
