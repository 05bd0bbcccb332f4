"""The local stack against the real servers: Temporal and pulsar-lite are durable across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from temporalio import workflow

# The sandbox re-imports this module for every workflow run; pass the non-workflow
# imports through so it does not re-import pytest, pulsar or the servers' helpers.
with workflow.unsafe.imports_passed_through():
    import pulsar
    import pytest
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.worker import Worker

    from timeline.runtime.stack import (
        ServerProcess,
        StackError,
        port_in_use,
        start_pulsar,
        start_temporal,
    )


@workflow.defn
class Greet:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"hello {name}"


@workflow.defn
class WaitForSignal:
    """Open until signalled: shows an *unfinished* workflow survives a server restart."""

    def __init__(self) -> None:
        self._got: list[str] = []

    @workflow.signal
    def push(self, value: str) -> None:
        self._got.append(value)

    @workflow.query
    def got(self) -> list[str]:
        return self._got

    @workflow.run
    async def run(self, count: int) -> list[str]:
        await workflow.wait_condition(lambda: len(self._got) >= count)
        return self._got


def _queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------
# Temporal


def test_session_temporal_runs_a_workflow(temporal_client: Client, aio: asyncio.Runner) -> None:
    async def main() -> str:
        queue = _queue()
        async with Worker(temporal_client, task_queue=queue, workflows=[Greet]):
            return await temporal_client.execute_workflow(
                Greet.run, "stack", id=f"greet-{uuid.uuid4().hex}", task_queue=queue,
                execution_timeout=timedelta(seconds=30),
            )  # fmt: skip

    assert aio.run(main()) == "hello stack"


def test_temporal_keeps_workflows_across_a_restart(tmp_path: Path, aio: asyncio.Runner) -> None:
    queue = _queue()
    server = start_temporal(tmp_path, die_with_parent=True)
    try:
        assert server.alive() and port_in_use(server.port)

        async def before() -> str:
            client = await Client.connect(server.address)
            # No workflow cache, so no sticky queue: otherwise the task after the restart
            # waits out the sticky schedule-to-start timeout (10 s) for this dead worker.
            async with Worker(client, task_queue=queue, workflows=[Greet, WaitForSignal], max_cached_workflows=0):
                result = await client.execute_workflow(Greet.run, "before", id="done-before", task_queue=queue)
                waiting = await client.start_workflow(WaitForSignal.run, 2, id="open-across", task_queue=queue)
                await waiting.signal(WaitForSignal.push, "a")
                # Let the worker finish the signal's workflow task before it shuts down;
                # a task it holds unfinished would wait out the 10 s task timeout later.
                assert await waiting.query(WaitForSignal.got) == ["a"]
                return result

        assert aio.run(before()) == "hello before"
        server.stop()  # SIGTERM: the dev server shuts down gracefully
        assert not server.alive()

        server = start_temporal(tmp_path, port=server.port, die_with_parent=True)  # same SQLite file, same address

        async def after() -> tuple[WorkflowExecutionStatus | None, list[EventType.ValueType], list[str]]:
            client = await Client.connect(server.address)
            done = client.get_workflow_handle("done-before")
            status = (await done.describe()).status
            history = await done.fetch_history()
            kinds = [event.event_type for event in history.events]
            # The open workflow kept its state ("a") and finishes on a new worker.
            async with Worker(client, task_queue=queue, workflows=[Greet, WaitForSignal]):
                waiting = client.get_workflow_handle("open-across", result_type=list[str])
                await waiting.signal(WaitForSignal.push, "b")
                got = await asyncio.wait_for(waiting.result(), 30)
            return status, kinds, got

        status, kinds, got = aio.run(after())
        assert status == WorkflowExecutionStatus.COMPLETED
        assert kinds[0] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
        assert got == ["a", "b"]
    finally:
        server.stop()
    assert not server.alive()


# ---------------------------------------------------------------------------
# Pulsar


@pytest.fixture
def make_pulsar_client() -> Iterator[Callable[[str], pulsar.Client]]:
    """Clients that are always closed (an unclosed client can crash the interpreter at exit)."""
    clients: list[pulsar.Client] = []

    def make(url: str) -> pulsar.Client:
        client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(pulsar.AlreadyClosed):  # a test may close its own
            client.close()


def _topic() -> str:
    return f"persistent://public/default/stack-{uuid.uuid4().hex[:8]}"


def test_pulsar_produces_and_consumes_1000(pulsar_url: str, make_pulsar_client: Callable[[str], pulsar.Client]) -> None:
    client = make_pulsar_client(pulsar_url)
    topic = _topic()
    # Subscribe first (from Earliest anyway) so the subscription owns every message.
    consumer = client.subscribe(topic, "all", initial_position=pulsar.InitialPosition.Earliest)
    producer = client.create_producer(topic, batching_enabled=True)
    sent = [f"m{i}".encode() for i in range(1000)]
    for data in sent:
        producer.send_async(data, None)
    producer.flush()

    got: list[bytes] = []
    while len(got) < len(sent):
        msg = consumer.receive(timeout_millis=10_000)
        got.append(msg.data())
        consumer.acknowledge(msg)
    assert got == sent


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_pulsar_redelivers_unacked_after_a_restart(
    tmp_path: Path, how: str, make_pulsar_client: Callable[[str], pulsar.Client]
) -> None:
    topic, sub, total, acked = _topic(), "durable", 200, 120
    sent = [f"m{i}".encode() for i in range(total)]
    broker: ServerProcess = start_pulsar(tmp_path, die_with_parent=True)
    try:
        client = make_pulsar_client(broker.address)
        consumer = client.subscribe(topic, sub, initial_position=pulsar.InitialPosition.Earliest)
        producer = client.create_producer(topic)
        for data in sent:
            producer.send(data)  # synchronous: acknowledged by the broker, hence stored
        for _ in range(acked):
            consumer.acknowledge(consumer.receive(timeout_millis=10_000))
        consumer.close()  # flushes the grouped acks to the broker
        client.close()
        if how == "sigkill":
            broker.kill()
        else:
            broker.stop()
        assert not broker.alive()

        broker = start_pulsar(tmp_path, port=broker.port, die_with_parent=True)
        client = make_pulsar_client(broker.address)
        consumer = client.subscribe(topic, sub)
        redelivered: list[bytes] = []
        with pytest.raises(pulsar.Timeout):  # nothing beyond the unacked tail
            while True:
                msg = consumer.receive(timeout_millis=1_000)
                redelivered.append(msg.data())
                consumer.acknowledge(msg)
        assert redelivered == sent[acked:]
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# ports


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_start_temporal_on_a_taken_port_fails_clearly(tmp_path: Path, taken_port: int) -> None:
    assert port_in_use(taken_port)
    with pytest.raises(StackError, match=rf"Temporal port {taken_port} .* already in use") as err:
        start_temporal(tmp_path, port=taken_port)
    assert "port=" in str(err.value)  # says how to choose another
    assert not (tmp_path / "logs" / "temporal.log").exists()  # failed before launching anything


def test_start_pulsar_on_a_taken_port_fails_clearly(tmp_path: Path, taken_port: int) -> None:
    with pytest.raises(StackError, match=rf"Pulsar port {taken_port} .* already in use"):
        start_pulsar(tmp_path, port=taken_port)


def test_stop_is_by_pid_and_frees_the_port(pulsar_server: ServerProcess, tmp_path: Path) -> None:
    broker = start_pulsar(tmp_path, die_with_parent=True)
    # Its own session: stopping it signals its group, never ours.
    assert os.getpgid(broker.pid) == broker.pid != os.getpgid(0)
    broker.stop()
    broker.stop()  # idempotent
    assert not broker.alive() and not port_in_use(broker.port)
    assert pulsar_server.alive()  # the session broker is untouched


def test_die_with_parent_stops_the_server_when_its_starter_is_killed(
    tmp_path: Path, wait_for: Callable[..., object]
) -> None:
    """A test run killed with -9 (no teardown) must not leave a broker behind."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from timeline.runtime.stack import start_pulsar\n"
        f"server = start_pulsar(Path({str(tmp_path)!r}), die_with_parent=True)\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2]
    )
    try:
        assert starter.stdout is not None
        pid = int(starter.stdout.readline())
        assert _alive(pid)
        starter.kill()
        starter.wait()
        wait_for(lambda: not _alive(pid), timeout=10, message=f"broker {pid} to exit after its starter died")
    finally:
        if starter.poll() is None:
            starter.kill()
            starter.wait()


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
