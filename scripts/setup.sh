#!/usr/bin/env bash
# Install usnet and its data on a fresh machine (idempotent; used by the README commands and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null
fi
# The CPU build of torch first, so the project's torch>=2.3 never pulls a CUDA build.
python -m pip install -q torch==2.13.0 2>&1 | grep -v -e '^WARNING' -e 'root' || true
python -m pip install -q -e '.[dev,onnx,sr,rl]' 2>&1 | grep -v -e '^WARNING' -e 'root' || true
python -c "import usnet, torch; print(f'usnet {usnet.__version__}, torch {torch.__version__}')"
