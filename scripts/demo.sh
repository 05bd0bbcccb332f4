#!/usr/bin/env bash
# Sets up .venv and runs the main job: the SPEC.md worked example with the batch
# evaluator, then `timeline demo`: the embedded stack (Temporal dev server,
# pulsar-lite, worker, feeder, API) streams 1,000 video sessions through the
# CIR timeline and checks every session against the batch evaluator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== the SPEC.md session (1s play, 2s seek, 5s buffer, 9s play), batch evaluator"
.venv/bin/timeline eval @examples/cir.tl --events examples/cir_session.jsonl --key session_id --time ts
echo
exec .venv/bin/timeline demo "$@"
