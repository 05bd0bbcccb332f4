#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh >/dev/null || true  # the explain page's browser test skips, saying why, without one
exec .venv/bin/python -m pytest "$@"
