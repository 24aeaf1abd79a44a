#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
python -m pytest "$@"
