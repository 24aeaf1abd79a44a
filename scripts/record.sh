#!/usr/bin/env bash
# Keep the small record of a finished run in docs/results/NAME (the README's tables quote them;
# runs/ is not committed): its spectrum (CSV, JSON, Markdown), per-epoch metrics, resolved config
# and usnet.json (metadata and final results, no weights). Usage: scripts/record.sh RUN_DIR NAME
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/record.sh RUN_DIR NAME}
name=${2:?usage: scripts/record.sh RUN_DIR NAME}
out=docs/results/$name
files="checkpoint/spectrum.csv checkpoint/spectrum.json checkpoint/spectrum.md metrics.csv
       config.yaml checkpoint/usnet.json"
for f in $files; do
    test -f "$run/$f" || { echo "record: $run/$f is missing (train and run usnet spectrum first)" >&2; exit 1; }
done
mkdir -p "$out"
for f in $files; do cp "$run/$f" "$out/$(basename "$f")"; done
echo "recorded $run in $out: $(ls "$out" | tr '\n' ' ')"
