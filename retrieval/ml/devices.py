"""Where tensors live: the torch device a name asks for, and the memory layout of models and inputs."""
from __future__ import annotations

import torch

#: Models and inputs are kept channels-last (NHWC): oneDNN runs the depthwise and pointwise
#: convolutions that make up EfficientNet faster that way (Lite0, 128 px, batch 32, 2 CPU threads:
#: 0.8 instead of 1.1-1.3 s per training step), and it is the layout CUDA's tensor cores prefer.
MEMORY_FORMAT = torch.channels_last


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is one, else CPU), ``cpu`` or ``cuda``; asking for CUDA without a
    CUDA device is a ``RuntimeError``, never a silent fallback to the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)
