"""The embedded stack as a user drives it: timeline up / status / register-workflow
(--dry-run, --list, --remove) / demo / down, on free ports in a temporary home."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from timeline.runtime.stack import free_port

ROOT = Path(__file__).resolve().parents[2]


def timeline(*argv, timeout=240):
    return subprocess.run([sys.executable, "-m", "timeline.cli.main", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_up_register_demo_down(tmp_path):
    home = str(tmp_path / "home")
    ports = [free_port() for _ in range(4)]
    up = timeline("up", "--home", home, "--temporal-port", str(ports[0]), "--ui-port", str(ports[1]),
                  "--pulsar-port", str(ports[2]), "--api-port", str(ports[3]))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "the embedded stack is up" in up.stdout
        stack = json.loads((Path(home) / "stack.json").read_text())
        assert stack["temporal"] == f"127.0.0.1:{ports[0]}" and stack["api"] == f"http://127.0.0.1:{ports[3]}"

        again = timeline("up", "--home", home)  # idempotent: everything runs, nothing is started
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running; nothing started" in again.stdout
        assert json.loads((Path(home) / "stack.json").read_text())["processes"] == stack["processes"]

        status = timeline("status", "--home", home)
        assert status.returncode == 0 and "worker" in status.stdout and "running" in status.stdout

        dry = timeline("register", "cir", "@examples/cir.tl", "--topic", "video-events", "--key", "session_id",
                       "--time", "ts", "--dry-run", "--home", home)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "dry run ok" in dry.stdout and "timeline/cir/duration_where-" in dry.stdout

        demo = timeline("demo", "--home", home, "--sessions", "40", "--shards", "2", timeout=400)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "all 40 sessions agree with the batch evaluator" in demo.stdout
        assert "CDN" in demo.stdout

        listed = timeline("register", "--list", "--home", home)
        assert listed.returncode == 0 and listed.stdout.startswith("cir: topic video-events")
        assert "dry-run" not in listed.stdout  # the dry run cleaned up after itself

        removed = timeline("register", "--remove", "cir", "--home", home)
        assert removed.returncode == 0 and "removed timeline 'cir'" in removed.stdout
        assert timeline("register", "--list", "--home", home).stdout.strip() == "no timelines registered"
        gone = timeline("register", "--remove", "cir", "--home", home)
        assert gone.returncode == 2 and "no timeline named 'cir'" in gone.stderr
    finally:
        down = timeline("down", "--home", home)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert timeline("status", "--home", home).returncode == 1


def test_up_says_which_port_is_taken(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = timeline("up", "--home", str(tmp_path / "h"), "--temporal-port", str(port), "--no-ui", "--no-api")
    assert out.returncode == 2
    assert str(port) in out.stderr and "Traceback" not in out.stderr


def test_commands_without_servers_say_what_to_do(tmp_path):
    out = timeline("register", "x", "has_existed(a == 1)", "--topic", "t", "--key", "k", "--time", "t",
                   "--temporal", f"127.0.0.1:{free_port()}", "--store", f"sqlite:///{tmp_path / 'r.db'}")
    assert out.returncode == 2 and "cannot reach Temporal" in out.stderr and "timeline up" in out.stderr
    bad = timeline("register", "x", "has_existed(a = 1)", "--topic", "t", "--key", "k", "--time", "t")
    assert bad.returncode == 2 and "1:15: syntax error" in bad.stderr


def _record(home: str) -> dict:
    return json.loads((Path(home) / "stack.json").read_text())


def test_recovery_after_kill_9_restart_and_pid_checks(tmp_path):
    """Issue 9, item 7: after kill -9 of one component, `status` exits 1 and `up`
    starts just that one; `restart` restarts one; `down` never signals a PID that
    now belongs to another program; a worker started by hand is listed by `status`."""
    home = str(tmp_path / "home")
    ports = [free_port() for _ in range(3)]
    up = timeline("up", "--home", home, "--temporal-port", str(ports[0]), "--no-ui", "--pulsar-port", str(ports[1]),
                  "--api-port", str(ports[2]))
    bystander = None
    by_hand = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        first = _record(home)
        assert set(first["processes"]) == {"temporal", "pulsar", "worker", "feeder-video-events", "api"}

        # kill -9 the worker: status says so and exits 1
        os.kill(first["processes"]["worker"]["pid"], signal.SIGKILL)
        status = timeline("status", "--home", home)
        assert status.returncode == 1, status.stdout
        assert re.search(r"^worker\s+STOPPED", status.stdout, re.M), status.stdout

        # up starts the worker only
        again = timeline("up", "--home", home)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "started: worker" in again.stdout and "temporal is already running" in again.stdout
        second = _record(home)
        assert second["processes"]["worker"]["pid"] != first["processes"]["worker"]["pid"]
        assert second["processes"]["temporal"] == first["processes"]["temporal"]
        assert timeline("status", "--home", home).returncode == 0

        # restart one component
        restarted = timeline("restart", "feeder", "--home", home)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        third = _record(home)
        assert third["processes"]["feeder-video-events"]["pid"] != second["processes"]["feeder-video-events"]["pid"]
        assert third["processes"]["api"] == second["processes"]["api"]
        unknown = timeline("restart", "nope", "--home", home)
        assert unknown.returncode == 2 and "no component named 'nope'" in unknown.stderr

        # A worker started by hand for this stack is reported (and left alone by down).
        by_hand = subprocess.Popen([sys.executable, "-m", "timeline.cli.main", "worker", "--home", home],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        status = timeline("status", "--home", home)
        assert "worker (by hand)" in status.stdout and str(by_hand.pid) in status.stdout, status.stdout

        # A recorded PID that now belongs to another program: the api's entry points at a
        # bystander (same PID, different start time and command line). Nobody signals it.
        bystander = subprocess.Popen(["sleep", "600"], start_new_session=True)
        record = _record(home)
        api_pid = record["processes"]["api"]["pid"]
        os.kill(api_pid, signal.SIGKILL)
        record["processes"]["api"]["pid"] = bystander.pid
        (Path(home) / "stack.json").write_text(json.dumps(record))
        status = timeline("status", "--home", home)
        assert status.returncode == 1 and "now belongs to another program" in status.stdout, status.stdout
    finally:
        down = timeline("down", "--home", home)
        if by_hand is not None:
            assert by_hand.poll() is None, "down stopped a worker it did not start"
            assert "left running: worker" in down.stdout, down.stdout
            by_hand.terminate()
            by_hand.wait(timeout=60)
        if bystander is not None:
            assert bystander.poll() is None, "down signalled a PID that belongs to another program"
            assert "left alone" in down.stdout, down.stdout
            bystander.kill()
            bystander.wait()
    assert down.returncode == 0, down.stdout + down.stderr
    assert timeline("status", "--home", home).returncode == 1
