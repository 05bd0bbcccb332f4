#!/usr/bin/env bash
# Sets up .venv and runs the main job: the SPEC.md worked example (CIR) with
# the batch evaluator, then the batch benchmark on 200,000 generated events.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== the plan of the CIR expression (examples/cir.tl)"
.venv/bin/timeline plan @examples/cir.tl
echo
echo "== its timeline for the SPEC.md session (1s play, 2s seek, 5s buffer, 9s play)"
.venv/bin/timeline eval @examples/cir.tl --events examples/cir_session.jsonl --key session_id --time ts --pretty
echo
echo "== rebuffering at 12 s"
.venv/bin/timeline eval @examples/cir.tl --events examples/cir_session.jsonl --key session_id --time ts --at 12000
