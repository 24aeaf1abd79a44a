#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, type-check (mypy, pyproject.toml), run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
mypy
python -m pytest "$@"
