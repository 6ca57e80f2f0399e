#!/usr/bin/env bash
# The accelerator check of issue 18, as one prepared script that fits 8 minutes on one GPU:
# secbir-b4 at 380 px with AMP on CUDA - query latency (target < 60 ms), index build over the
# full 10015-image synthetic library (target 10k images < 3 min), one thesis-profile training
# epoch with AMP and in FP32. Figures go to stdout and to $OUT/gpu.json (or ./gpu.json).
#
#   bench/gpu.sh            # on the device machine, from the repository root
#
# The device machine cannot reach PyPI and a virtualenv with torch is far over what travels
# with the tree, so this uses a Python that already has CUDA torch, timm and Pillow
# ($PYTHON, else .venv/bin/python, else python3) and stops with a clear message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c 'import torch, timm, PIL, numpy, tqdm; assert torch.cuda.is_available()' 2>/dev/null; then
  echo "bench/gpu.sh: $py has no CUDA-enabled torch (with timm, Pillow, NumPy, tqdm); set PYTHON to one that has" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
out="${OUT:-.}"
mkdir -p "$out"
# 8 minutes in all: rendering the library takes about 1 of them on 16 cores.
timeout 480 "$py" bench/gpu.py --json "$out/gpu.json" "$@"
