"""The multi-node run (bench/multinode.py), smaller: Temporal, pulsar-lite and PostgreSQL, 2 workers,
2 feeders and 2 API instances as separate processes with separate state folders; a worker and the
feeding feeder get kill -9 mid-stream; both APIs answer every session alike, equal to batch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_multinode_run_on_this_machine():
    # Not under pytest's tmp folder: PostgreSQL runs as pgserver's own user, which must reach it.
    state = Path(tempfile.mkdtemp(prefix="timeline-multinode-test-"))
    try:
        run = subprocess.run([sys.executable, "-m", "bench.multinode", "--sessions", "40", "--shards", "2", "--kill",
                              "--timeout", "600", "--state", str(state)],
                             capture_output=True, text=True, cwd=ROOT, timeout=1500)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-4000:]
        assert "without the token: 401" in out
        assert "kill -9: worker-1 and feeder-1" in out
        assert "read 40 sessions through api-1 and api-2: 40 equal, 0 differ" in out, out[-2000:]
        for node in ("worker-1", "worker-2", "feeder-1", "feeder-2", "api-1", "api-2"):
            assert (state / "nodes" / node).is_dir(), f"{node} had no state folder of its own"
    finally:
        shutil.rmtree(state, ignore_errors=True)
