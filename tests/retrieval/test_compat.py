"""The torchvision compat shim: timm imports on CPU torch, and it is a no-op where ops exist."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)


def test_timm_builds_and_runs_a_model_after_the_shim():
    result = run(
        "import retrieval.ml\n"
        "import timm, torch, torchvision\n"
        "from retrieval.ml.compat import ensure_torchvision_ops\n"
        "m = timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=7).eval()\n"
        "print(ensure_torchvision_ops(), tuple(m(torch.zeros(1, 3, 224, 224)).shape))\n"
    )
    assert result.returncode == 0, result.stderr
    state, shape = result.stdout.split(" ", 1)
    assert state in {"present", "loaded", "stubbed"}
    assert shape.strip() == "(1, 7)"


def test_no_op_when_torchvision_ops_are_already_registered():
    result = run(
        "import torch\n"
        "lib = torch.library.Library('torchvision', 'DEF')\n"
        "lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')\n"
        "import retrieval.ml.compat as compat\n"
        "print(compat.ensure_torchvision_ops(), compat._stub_library is None)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["present", "True"]


def test_stubbed_ops_fail_loudly_if_called():
    result = run(
        "import retrieval.ml, torch\n"
        "from retrieval.ml.compat import ensure_torchvision_ops\n"
        "if ensure_torchvision_ops() != 'stubbed': print('native'); raise SystemExit(0)\n"
        "try:\n"
        "    torch.ops.torchvision.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)\n"
        "except (RuntimeError, NotImplementedError) as exc:\n"
        "    print('refused')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"refused", "native"}
