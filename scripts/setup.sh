#!/usr/bin/env bash
# Set up usnet on a fresh Debian machine (idempotent; used by the README commands and CI):
# the Fashion-MNIST data package, the CPU build of torch, then the project with its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
pip_quiet() { python -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }
# torch first: the project's torch>=2.3 must never make pip pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip_quiet torch==2.13.0
pip_quiet -e '.[dev,onnx,sr,rl]'
python -c "import usnet, torch; print(f'usnet {usnet.__version__} with torch {torch.__version__}')"
