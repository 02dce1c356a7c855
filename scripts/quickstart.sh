#!/usr/bin/env bash
# Quick start: set up, then run the whole chain on the demo region shipped with the package (offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/minewatch run --demo --out runs/demo
