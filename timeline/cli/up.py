"""`timeline up` / `down` / `status`: the embedded stack on this machine.

Starts the Temporal dev server (SQLite file), the pulsar-lite broker, a worker,
a feeder per topic and the API as detached processes; everything they keep
lives under one folder (default .timeline/): temporal/, pulsar/, results.db,
logs/, and stack.json, which records addresses and PIDs so the other commands
find the stack and `down` can stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from timeline.dsl.errors import TimelineError
from timeline.runtime import stack
from timeline.runtime.settings import home, read_stack, stack_file

ROOT = Path(__file__).resolve().parents[2]
STOP_ORDER = ("feeder", "api", "worker", "pulsar", "temporal")


def _alive(pid: int | None) -> bool:
    return bool(pid) and stack.pid_alive(pid)


def running_processes(state: Path) -> dict[str, dict]:
    procs = read_stack(state).get("processes", {})
    return {name: p for name, p in procs.items() if _alive(p.get("pid"))}


def _launch_python(name: str, argv: list[str], state: Path) -> dict:
    log = state / "logs" / f"{name}.log"
    proc, _ = stack._launch(name, [sys.executable, "-m", "timeline.cli.main", *argv], log, ROOT)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise stack.StackError(f"{name} exited at start (code {proc.returncode}); log {log}:\n"
                               f"{stack._tail(log, 0, 20)}")
    return {"pid": proc.pid, "log": str(log)}


def _wait_http(url: str, timeout: float, what: str, log: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise stack.StackError(f"{what} did not answer at {url} within {timeout:g}s; see {log}")


def up(state: Path, temporal_port: int = 7233, ui_port: int | None = 8233, pulsar_port: int = 6650,
       api_port: int | None = 8080, topics: tuple[str, ...] = ("video-events",), quiet: bool = False) -> dict:
    """Start the stack; returns the stack record (also written to stack.json)."""
    say = (lambda *a: None) if quiet else print
    live = running_processes(state)
    if live:
        raise TimelineError(f"the embedded stack in {state} is already running ({', '.join(sorted(live))}); "
                            "`timeline status` shows it, `timeline down` stops it")
    state.mkdir(parents=True, exist_ok=True)
    record: dict = {"home": str(state.resolve()), "namespace": "default", "processes": {}}
    started: list[tuple[str, int]] = []
    try:
        say(f"starting Temporal dev server on 127.0.0.1:{temporal_port} (state {state / 'temporal'}) ...")
        t = stack.start_temporal(state / "temporal", port=temporal_port, ui_port=ui_port, headless=ui_port is None)
        started.append(("temporal", t.pid))
        record["temporal"] = t.address
        record["processes"]["temporal"] = {"pid": t.pid, "log": str(t.log_path)}
        if ui_port:
            record["temporal_ui"] = f"http://127.0.0.1:{ui_port}"
        say(f"starting pulsar-lite broker on 127.0.0.1:{pulsar_port} (state {state / 'pulsar'}) ...")
        p = stack.start_pulsar(state / "pulsar", port=pulsar_port)
        started.append(("pulsar", p.pid))
        record["pulsar"] = p.address
        record["processes"]["pulsar"] = {"pid": p.pid, "log": str(p.log_path)}
        record["store"] = f"sqlite:///{(state / 'results.db').resolve()}"
        endpoints = ["--temporal", record["temporal"], "--pulsar", record["pulsar"], "--store", record["store"]]
        say("starting worker ...")
        record["processes"]["worker"] = _launch_python("worker", ["worker", *endpoints], state)
        started.append(("worker", record["processes"]["worker"]["pid"]))
        for topic in topics:
            name = f"feeder-{topic}"
            say(f"starting feeder for topic {topic} ...")
            record["processes"][name] = _launch_python(name, ["feeder", "--topic", topic, *endpoints], state)
            started.append((name, record["processes"][name]["pid"]))
        if api_port:
            if stack.port_in_use(api_port):
                raise stack.StackError(f"port {api_port} for the API is taken; choose another with --api-port")
            say(f"starting API on http://127.0.0.1:{api_port} ...")
            record["processes"]["api"] = _launch_python(
                "api", ["api", "--host", "127.0.0.1", "--port", str(api_port), *endpoints], state)
            started.append(("api", record["processes"]["api"]["pid"]))
            record["api"] = f"http://127.0.0.1:{api_port}"
            _wait_http(f"{record['api']}/timelines", 30, "the API", record["processes"]["api"]["log"])
    except BaseException:
        for _, pid in reversed(started):
            _stop_pid(pid)
        raise
    stack_file(state).write_text(json.dumps(record, indent=2))
    return record


def _stop_pid(pid: int, timeout: float = 15) -> None:
    import signal

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)


def down(state: Path, quiet: bool = False) -> list[str]:
    record = read_stack(state)
    procs = record.get("processes", {})
    order = sorted(procs, key=lambda n: next((i for i, p in enumerate(STOP_ORDER) if n.startswith(p)), 0))
    stopped = []
    for name in order:
        pid = procs[name].get("pid")
        if _alive(pid):
            if not quiet:
                print(f"stopping {name} (pid {pid}) ...")
            _stop_pid(pid)
            stopped.append(name)
    if record:
        record["processes"] = {}
        stack_file(state).write_text(json.dumps(record, indent=2))
    return stopped


def up_command(args: argparse.Namespace) -> int:
    state = home(args)
    record = up(state, args.temporal_port, None if args.no_ui else args.ui_port, args.pulsar_port,
                None if args.no_api else args.api_port, tuple(args.topic or ["video-events"]))
    print(f"\nthe embedded stack is up (state in {state}/, logs in {state}/logs/):")
    print(f"  Temporal    {record['temporal']}" + (f"   UI {record['temporal_ui']}" if "temporal_ui" in record else ""))
    print(f"  Pulsar      {record['pulsar']}")
    print(f"  store       {record['store']}")
    if "api" in record:
        print(f"  API         {record['api']}   (OpenAPI: {record['api']}/docs)")
    print("next: `register-workflow NAME EXPR --topic video-events --key session_id --time ts`, "
          "`sample-event-producer`, `timeline down`")
    return 0


def down_command(args: argparse.Namespace) -> int:
    state = home(args)
    stopped = down(state)
    print("stopped: " + ", ".join(stopped) if stopped else f"nothing of the embedded stack in {state} was running")
    return 0


def status_command(args: argparse.Namespace) -> int:
    state = home(args)
    record = read_stack(state)
    if not record:
        print(f"no embedded stack in {state} (start one with `timeline up`)")
        return 1
    live = running_processes(state)
    for name, proc in record.get("processes", {}).items():
        print(f"{name:24s} {'running' if name in live else 'STOPPED':8s} pid {proc.get('pid')}  log {proc.get('log')}")
    for key in ("temporal", "temporal_ui", "pulsar", "store", "api"):
        if key in record:
            print(f"{key:24s} {record[key]}")
    return 0 if live else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("up", help="start the embedded stack (Temporal, Pulsar, worker, feeder, API)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--home", metavar="DIR", help="state folder (default .timeline, or TIMELINE_HOME)")
    u.add_argument("--temporal-port", type=int, default=7233)
    u.add_argument("--ui-port", type=int, default=8233, help="Temporal UI port (default 8233)")
    u.add_argument("--no-ui", action="store_true", help="run Temporal headless")
    u.add_argument("--pulsar-port", type=int, default=6650)
    u.add_argument("--api-port", type=int, default=8080)
    u.add_argument("--no-api", action="store_true", help="do not start the API")
    u.add_argument("--topic", action="append", help="source topic to feed (repeatable; default video-events)")
    u.set_defaults(handler=up_command)
    d = sub.add_parser("down", help="stop the embedded stack (its state is kept)")
    d.add_argument("--home", metavar="DIR")
    d.set_defaults(handler=down_command)
    s = sub.add_parser("status", help="show the embedded stack's processes and addresses")
    s.add_argument("--home", metavar="DIR")
    s.set_defaults(handler=status_command)
