"""Make ``import torchvision`` (and so ``import timm``) work with the CPU build of torch.

PyPI's torchvision 0.28.0 is a CUDA build. Its C++ extension (``_C.so``) cannot be loaded
by the CPU build of torch, and ``torchvision/_meta_registrations.py`` then fails at import
time with ``operator torchvision::nms does not exist`` because it registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms``. We never call those detection ops; declaring
their schemas is enough for the import to succeed. Anything that actually calls them still
fails loudly (no kernel is registered), which is what we want.

Import this module before ``timm`` or ``torchvision``: ``retrieval.ml`` does so in its
``__init__``. Where torchvision's extension loads normally this is a no-op.
"""
from __future__ import annotations

import glob
import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

# Schemas copied from torchvision/csrc/ops/nms.cpp and quantized/cpu/qnms_kernel.cpp.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The Library object must stay alive for as long as the schemas are needed: when it is
# garbage collected, torch removes the definitions again.
_stub_library: torch.library.Library | None = None
_state: str | None = None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _extension_paths() -> list[str]:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = list(spec.submodule_search_locations)[0]
    return sorted(glob.glob(os.path.join(folder, "_C*.so")) + glob.glob(os.path.join(folder, "_C*.pyd")))


def ensure_torchvision_ops() -> str:
    """Make the torchvision ops that its import needs exist; return how.

    Returns ``"present"`` (already registered, nothing done), ``"loaded"`` (torchvision's
    own extension loaded) or ``"stubbed"`` (extension unusable with this torch: schemas
    declared so that ``import torchvision`` succeeds). Idempotent.
    """
    global _stub_library, _state
    if _state is not None:
        return _state
    if all(_op_exists(name) for name in _SCHEMAS):
        _state = "present"
        return _state
    errors = []
    for path in _extension_paths():
        try:
            torch.ops.load_library(path)
        except OSError as exc:  # a CUDA build of the extension on CPU torch
            errors.append(f"{os.path.basename(path)}: {exc}")
            continue
        if all(_op_exists(name) for name in _SCHEMAS):
            _state = "loaded"
            return _state
    library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        if not _op_exists(name):
            library.define(schema)
    _stub_library = library
    _state = "stubbed"
    logger.debug("torchvision C++ ops unavailable (%s); declared schemas only", "; ".join(errors) or "no extension")
    return _state


ensure_torchvision_ops()
