"""`timeline up` / `down` / `status` / `restart`: the embedded stack on this machine.

Starts the Temporal dev server (SQLite file), the pulsar-lite broker, a worker,
a feeder per topic and the API as detached processes; everything they keep
lives under one folder (default .timeline/): temporal/, pulsar/, results.db,
logs/, and stack.json, which records addresses and, for each process, its PID,
start time and command line, so the other commands find the stack.

* `up` starts what is not running and leaves the rest alone: after a crash of
  one component, `up` again brings back just that one (on its recorded port).
* `restart COMPONENT` stops one component and starts it again (temporal,
  pulsar, worker, api, feeder-TOPIC, or feeder for all feeders).
* `status` exits 1 when any component is down. It also lists workers, feeders
  and APIs started by hand for this stack (found by their command line:
  `--temporal` or `--home` naming this stack, or TIMELINE_TEMPORAL/TIMELINE_HOME
  in their environment, or a working directory whose .timeline is this home);
  `down` leaves those running and says so.
* Before any signal, a PID is checked against the recorded start time and
  command line (psutil): a number reused by another program is never signalled.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from timeline.dsl.errors import TimelineError, UsageError
from timeline.runtime import stack
from timeline.runtime.settings import home, read_stack, stack_file
from timeline.runtime.stack import ManagedProcess

STOP_ORDER = ("feeder", "api", "worker", "pulsar", "temporal")
DEFAULTS = {"temporal_port": 7233, "ui_port": 8233, "pulsar_port": 6650, "api_port": 8080,
            "topics": ["video-events"]}


def _rank(name: str) -> int:
    return next((i for i, p in enumerate(STOP_ORDER) if name.startswith(p)), 0)


def managed(record: dict) -> dict[str, ManagedProcess]:
    """The processes stack.json records, in start order (servers first)."""
    procs = {name: ManagedProcess.from_record(name, r) for name, r in record.get("processes", {}).items()}
    return dict(sorted(procs.items(), key=lambda item: -_rank(item[0])))


def running_processes(state: Path) -> dict[str, ManagedProcess]:
    return {name: p for name, p in managed(read_stack(state)).items() if p.alive()}


def _save(state: Path, record: dict) -> None:
    stack_file(state).write_text(json.dumps(record, indent=2))


def _endpoint_args(record: dict) -> list[str]:
    return ["--temporal", record["temporal"], "--pulsar", record["pulsar"], "--store", record["store"]]


def _wait_http(url: str, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            time.sleep(0.2)
    raise stack.StackError(f"{what} did not answer at {url} within {timeout:g}s; see {log}")


def _component(state: Path, record: dict, name: str) -> ManagedProcess:
    """Start one component with the stack's recorded settings and addresses."""
    settings = record["settings"]
    if name == "temporal":
        ui_port = settings.get("ui_port")
        t = stack.start_temporal(state / "temporal", port=settings["temporal_port"], ui_port=ui_port,
                                 headless=ui_port is None)
        record["temporal"] = t.address
        if ui_port:
            record["temporal_ui"] = f"http://127.0.0.1:{ui_port}"
        return t
    if name == "pulsar":
        p = stack.start_pulsar(state / "pulsar", port=settings["pulsar_port"])
        record["pulsar"] = p.address
        return p
    missing = [s for s in ("temporal", "pulsar") if s not in record]
    if missing:
        raise stack.StackError(f"cannot start {name}: {' and '.join(missing)} never started in {state}; "
                               "run `timeline up`")
    if name == "worker":
        argv = ["worker"]
    elif name.startswith("feeder-"):
        argv = ["feeder", "--topic", name.removeprefix("feeder-")]
    elif name == "api":
        port = settings["api_port"]
        if stack.port_in_use(port):
            raise stack.StackError(f"port {port} for the API is taken; choose another with --api-port")
        argv = ["api", "--host", "127.0.0.1", "--port", str(port)]
    else:
        raise UsageError(f"no component named {name!r}: use temporal, pulsar, worker, api, feeder or feeder-TOPIC")
    proc = stack.launch_component(name, [*argv, *_endpoint_args(record)], state / "logs")
    time.sleep(0.5)
    if not proc.alive():
        proc.stop()
        raise stack.StackError(f"{name} exited at start; log {proc.log_path}:\n{proc.tail(20)}")
    if name == "api":
        record["api"] = f"http://127.0.0.1:{settings['api_port']}"
        _wait_http(f"{record['api']}/timelines", 60, "the API", proc.log_path)
    return proc


def _settings(record: dict, given: dict) -> dict:
    """The stack's settings: what an earlier `up` recorded wins (clients know those
    addresses), then what is given now, then the defaults."""
    settings = dict(record.get("settings") or {})
    for key, value in given.items():
        settings.setdefault(key, value)
    return settings


def up(state: Path, temporal_port: int = 7233, ui_port: int | None = 8233, pulsar_port: int = 6650,
       api_port: int | None = 8080, topics: tuple[str, ...] = ("video-events",), quiet: bool = False) -> dict:
    """Start whatever of the stack is not running (idempotent); returns the stack record
    (also written to stack.json) with `started` and `running` lists of component names."""
    say = (lambda *a: None) if quiet else print
    state.mkdir(parents=True, exist_ok=True)
    record = read_stack(state) or {}
    record.setdefault("home", str(state.resolve()))
    record.setdefault("namespace", "default")
    record["settings"] = _settings(record, {"temporal_port": temporal_port, "ui_port": ui_port,
                                            "pulsar_port": pulsar_port, "api_port": api_port,
                                            "topics": list(topics)})
    record["store"] = f"sqlite:///{(state / 'results.db').resolve()}"
    settings = record["settings"]
    wanted = ["temporal", "pulsar", "worker", *(f"feeder-{t}" for t in settings["topics"])]
    if settings.get("api_port"):
        wanted.append("api")
    known = managed(record)
    record["processes"] = {n: p.to_record() for n, p in known.items() if p.alive()}
    started: list[ManagedProcess] = []
    try:
        for name in wanted:
            if name in record["processes"]:
                say(f"{name} is already running (pid {known[name].pid})")
                continue
            say(f"starting {name} ...")
            proc = _component(state, record, name)
            started.append(proc)
            record["processes"][name] = proc.to_record()
            _save(state, record)
    except BaseException:
        for proc in reversed(started):  # what this call started; what ran before keeps running
            proc.stop()
            record["processes"].pop(proc.name, None)
        _save(state, record)
        raise
    _save(state, record)
    return {**record, "started": [p.name for p in started],
            "running": [n for n in wanted if n not in {p.name for p in started}]}


def _select(record: dict, component: str) -> list[str]:
    names = list(record.get("processes", {})) + [n for n in ("temporal", "pulsar", "worker", "api")
                                                  if n not in record.get("processes", {})]
    names += [f"feeder-{t}" for t in (record.get("settings") or {}).get("topics", [])]
    names = list(dict.fromkeys(names))
    chosen = [n for n in names if n == component or (component == "feeder" and n.startswith("feeder-"))]
    if not chosen:
        raise UsageError(f"no component named {component!r} in the stack in {record.get('home')}: "
                         f"choose one of {', '.join(names)} (or feeder for all feeders)")
    return chosen


def restart(state: Path, component: str, quiet: bool = False) -> list[str]:
    """Stop one component (if it runs) and start it again on its recorded settings."""
    say = (lambda *a: None) if quiet else print
    record = read_stack(state)
    if not record.get("settings"):
        raise TimelineError(f"no embedded stack in {state} (start one with `timeline up`)")
    names = _select(record, component)
    procs = managed(record)
    for name in names:
        if name in procs and procs[name].stop():
            say(f"stopped {name} (pid {procs[name].pid})")
        record["processes"].pop(name, None)
        say(f"starting {name} ...")
        proc = _component(state, record, name)
        record["processes"][name] = proc.to_record()
        _save(state, record)
        say(f"{name} is running (pid {proc.pid})")
    return names


def down(state: Path, quiet: bool = False) -> list[str]:
    say = (lambda *a: None) if quiet else print
    record = read_stack(state)
    stopped = []
    for name, proc in sorted(managed(record).items(), key=lambda item: _rank(item[0])):
        if proc.alive():
            say(f"stopping {name} (pid {proc.pid}) ...")
            proc.stop()
            stopped.append(name)
        elif proc.pid_reused():
            say(f"{name} is not running; its pid {proc.pid} now belongs to another program, left alone")
    for found in stack.find_components(state, record):
        say(f"left running: {found.describe()} (not started by `timeline up`; stop it yourself)")
    if record:
        record["processes"] = {}
        _save(state, record)
    return stopped


def up_command(args: argparse.Namespace) -> int:
    state = home(args)
    record = read_stack(state)
    merged = {**DEFAULTS, **(record.get("settings") or {})}
    for key in ("temporal_port", "ui_port", "pulsar_port", "api_port"):  # flags given now win
        if getattr(args, key) is not None:
            merged[key] = getattr(args, key)
    if args.no_ui:
        merged["ui_port"] = None
    if args.no_api:
        merged["api_port"] = None
    if args.topic:
        merged["topics"] = list(dict.fromkeys(args.topic if not record else merged["topics"] + args.topic))
    if record:
        record["settings"] = merged
        _save(state, record)
    result = up(state, merged["temporal_port"], merged["ui_port"], merged["pulsar_port"], merged["api_port"],
                tuple(merged["topics"]))
    if not result["started"]:
        print(f"\nthe embedded stack in {state}/ was already running; nothing started")
    else:
        print(f"\nthe embedded stack is up (state in {state}/, logs in {state}/logs/); "
              f"started: {', '.join(result['started'])}")
    print(f"  Temporal    {result['temporal']}"
          + (f"   UI {result['temporal_ui']}" if "temporal_ui" in result else ""))
    print(f"  Pulsar      {result['pulsar']}")
    print(f"  store       {result['store']}")
    if "api" in result["processes"]:
        print(f"  API         {result['api']}   (OpenAPI: {result['api']}/docs)")
    print("next: `register-workflow NAME EXPR --topic video-events --key session_id --time ts`, "
          "`sample-event-producer`, `timeline status`, `timeline down`")
    return 0


def down_command(args: argparse.Namespace) -> int:
    state = home(args)
    stopped = down(state)
    print("stopped: " + ", ".join(stopped) if stopped else f"nothing of the embedded stack in {state} was running")
    return 0


def restart_command(args: argparse.Namespace) -> int:
    restart(home(args), args.component)
    return 0


def status_command(args: argparse.Namespace) -> int:
    state = home(args)
    record = read_stack(state)
    if not record:
        print(f"no embedded stack in {state} (start one with `timeline up`)")
        return 1
    procs = managed(record)
    down_names = []
    for name, proc in procs.items():
        if proc.alive():
            state_word = "running"
        else:
            state_word = "STOPPED"
            down_names.append(name)
        note = "  (its pid now belongs to another program)" if state_word == "STOPPED" and proc.pid_reused() else ""
        print(f"{name:24s} {state_word:8s} pid {proc.pid}  log {proc.log_path}{note}")
    for found in stack.find_components(state, record):
        print(f"{found.role + ' (by hand)':24s} {'running':8s} pid {found.pid}  {' '.join(found.cmdline)}")
    for key in ("temporal", "temporal_ui", "pulsar", "store", "api"):
        if key in record:
            print(f"{key:24s} {record[key]}")
    if not procs:
        print(f"nothing of the embedded stack in {state} is running (start it with `timeline up`)")
        return 1
    if down_names:
        print(f"down: {', '.join(down_names)}; `timeline up` starts what is missing, "
              "`timeline restart COMPONENT` restarts one")
        return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("up", help="start the embedded stack, or what of it is not running "
                                  "(Temporal, Pulsar, worker, feeder, API)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--home", metavar="DIR", help="state folder (default .timeline, or TIMELINE_HOME)")
    u.add_argument("--temporal-port", type=int, help="default 7233 (a stack that ran keeps its ports)")
    u.add_argument("--ui-port", type=int, help="Temporal UI port (default 8233)")
    u.add_argument("--no-ui", action="store_true", help="run Temporal headless")
    u.add_argument("--pulsar-port", type=int, help="default 6650")
    u.add_argument("--api-port", type=int, help="default 8080")
    u.add_argument("--no-api", action="store_true", help="do not start the API")
    u.add_argument("--topic", action="append", help="source topic to feed (repeatable; default video-events)")
    u.set_defaults(handler=up_command)
    d = sub.add_parser("down", help="stop the embedded stack (its state is kept)")
    d.add_argument("--home", metavar="DIR")
    d.set_defaults(handler=down_command)
    s = sub.add_parser("status", help="show the embedded stack's processes and addresses (exit 1 if any is down)")
    s.add_argument("--home", metavar="DIR")
    s.set_defaults(handler=status_command)
    r = sub.add_parser("restart", help="stop one component of the embedded stack and start it again")
    r.add_argument("component", help="temporal, pulsar, worker, api, feeder-TOPIC, or feeder (all feeders)")
    r.add_argument("--home", metavar="DIR")
    r.set_defaults(handler=restart_command)
