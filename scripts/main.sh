#!/usr/bin/env bash
# The README's main job on the embedded default data (Fashion-MNIST): train a small US-Net with the
# sandwich rule (configs/fashion_mnist.yaml), calibrate batch norm per width, print the spectrum
# (accuracy, MACs, params, latency per width) and save its plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-runs/fashion_mnist}
usnet train configs/fashion_mnist.yaml --set output.dir="$out" "$@"
usnet spectrum "$out/checkpoint" --widths 0.25:1.0:0.05
usnet select "$out/checkpoint" --max-macs 1M      # the best width within 1 M MACs, from that spectrum
echo "plot: $out/checkpoint/spectrum.png"
