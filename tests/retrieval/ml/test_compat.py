"""The torchvision compat shim (retrieval/ml/compat.py), checked against what this machine's
torchvision does without it.

Two situations, told apart by importing torchvision in a fresh interpreter *without* the shim:

* **the extension cannot load** (PyPI's CUDA build of torchvision next to CPU torch): that import
  fails on ``torchvision::nms``; with the shim it works, the ops are declared stubs
  (``"stubbed"``) and calling one fails loudly;
* **the extension loads** (matching builds, e.g. a CUDA worker): that import works; the shim is a
  no-op (``"present"`` or ``"loaded"``, no stub library) and ``nms`` is torchvision's own kernel,
  which computes the right boxes.

Whichever situation this machine is in, its tests assert it; the no-op is also checked on any
machine with ops registered before the shim runs, whose kernel must still be the one called.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXTENSION_FAILS, EXTENSION_LOADS = "the extension cannot load", "the extension loads"

# Two overlapping boxes (IoU 0.81) and a separate one: NMS at 0.5 keeps the best of the pair and
# the separate box.
NMS_CALL = (
    "boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])\n"
    "scores = torch.tensor([0.9, 0.8, 0.7])\n"
    "result = torch.ops.torchvision.nms(boxes, scores, 0.5)\n"
)


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def situation() -> str:
    """Whether torchvision imports on its own here: the oracle, without retrieval.ml.compat."""
    result = run("import torchvision\n")
    if result.returncode == 0:
        return EXTENSION_LOADS
    assert "torchvision::nms" in result.stderr, f"torchvision fails to import for another reason:\n{result.stderr}"
    return EXTENSION_FAILS


def test_after_the_shim_torchvision_imports_and_timm_builds_and_runs_a_model(situation):
    result = run(
        "import retrieval.ml\n"
        "import timm, torch, torchvision\n"
        "from retrieval.ml.compat import ensure_torchvision_ops\n"
        "m = timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=7).eval()\n"
        "print(ensure_torchvision_ops(), tuple(m(torch.zeros(1, 3, 224, 224)).shape))\n"
    )
    assert result.returncode == 0, result.stderr
    state, shape = result.stdout.split(" ", 1)
    assert shape.strip() == "(1, 7)"
    if situation == EXTENSION_FAILS:
        assert state == "stubbed"
    else:
        assert state in {"present", "loaded"}


def test_the_ops_are_stubs_that_refuse_or_torchvisions_own_that_compute(situation):
    result = run(
        "import retrieval.ml, torch\n"
        "import retrieval.ml.compat as compat\n"
        "print(compat.ensure_torchvision_ops(), compat._stub_library is None)\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in NMS_CALL.splitlines())
        + "    print('computed', result.tolist())\n"
        "except (RuntimeError, NotImplementedError) as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    if situation == EXTENSION_FAILS:
        # schemas only: importing works, and calling a detection op fails loudly instead of
        # returning something made up
        assert first == "stubbed False"
        assert second.startswith("refused")
    else:
        # the shim did nothing: no stub library, and nms is torchvision's real kernel
        assert first in {"present True", "loaded True"}
        assert second == "computed [0, 2]"


def test_the_shim_is_a_no_op_that_leaves_registered_ops_and_their_kernels_in_place():
    # Ops registered before the shim runs (as torchvision's own extension registers them) with a
    # CPU kernel: the shim must report "present", declare nothing, and the call must still reach
    # that kernel (a stub declared over it would make the call fail).
    result = run(
        "import torch\n"
        "lib = torch.library.Library('torchvision', 'DEF')\n"
        "lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "lib.impl('nms', lambda dets, scores, iou: torch.tensor([42]), 'CPU')\n"
        "import retrieval.ml.compat as compat\n"
        "print(compat.ensure_torchvision_ops(), compat._stub_library is None)\n"
        + NMS_CALL
        + "print(result.tolist())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["present True", "[42]"]
