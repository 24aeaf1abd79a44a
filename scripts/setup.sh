#!/usr/bin/env bash
# Set up usnet on a fresh Debian machine (idempotent; used by the README commands and CI):
# the Fashion-MNIST data package, torch with the torchvision built for it, then the project with
# its extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
pip_quiet() { python -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }
# torch and torchvision pinned together, first: the project's ranges must never make pip resolve a
# mismatched pair (torchvision's operators fail to load beside another torch build). 2.14.1/0.29.1
# is the pair these machines install from local disk; it runs on the CPU.
TORCH=${USNET_TORCH:-2.14.1} TORCHVISION=${USNET_TORCHVISION:-0.29.1}
python - "$TORCH" "$TORCHVISION" <<'PY' 2>/dev/null || pip_quiet "torch==$TORCH" "torchvision==$TORCHVISION"
import sys, torch, torchvision
want = tuple(sys.argv[1:3])
have = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
sys.exit(0 if have == want else 1)
PY
pip_quiet -e '.[dev,onnx,sr,rl]'
python -c "import usnet, torch, torchvision, timm; print(f'usnet {usnet.__version__} with torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}')"
