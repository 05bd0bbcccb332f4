"""Removing a timeline while it is fed, and registering the name again (issue 9, item 3).

A producer keeps writing to the topic the whole time. After the removal no
workflow of the old registration (generation) may run: the feeder, which may
not have noticed yet, signal-with-starts them again, and they must end on
their own. The name registered again, with another expression, starts clean:
its results equal the batch evaluator's over the events it was fed.
"""

from __future__ import annotations

import threading
import time
import uuid

import msgspec
import pulsar
from runtime_helpers import batch_timelines, produce, spawn, wait_equal
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, workflow_tree
from timeline.runtime.registry import build_spec, register_spec, remove_spec
from timeline.store import open_store

OLD = 'has_existed(playerStateChange == "play")'
NEW = 'duration_in_cur_state(latest_event_to_state(cdn)) >= 30s || latest_event_to_state(bitrate) > 3000'


class Load:
    """A producer writing sessions to a topic at a steady rate, in its own thread, until stopped."""

    def __init__(self, url: str, topic: str, records: list[dict], rate: float = 300):
        self.client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        self.producer = self.client.create_producer(topic, batching_enabled=True, block_if_queue_full=True)
        self.records, self.rate, self.sent = records, rate, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        for r in self.records:
            if self.stop.is_set():
                break
            self.producer.send_async(msgspec.json.encode(r), None)
            self.sent += 1
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        self.producer.flush()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        self.producer.close()
        self.client.close()


def _running(aio, address: str, spec) -> list[str]:
    async def go():
        client = await connect(address)
        running = []
        for node in workflow_tree(spec):
            try:
                desc = await client.get_workflow_handle(node.workflow_id).describe()
            except RPCError:
                continue  # never started
            if desc.status == WorkflowExecutionStatus.RUNNING:
                running.append(node.workflow_id)
        return running

    return aio.run(go())


def test_remove_and_register_again_under_load(temporal_server, pulsar_server, tmp_path, wait_for, aio):
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    topic, name = f"removal-{uuid.uuid4().hex[:8]}", f"del-{uuid.uuid4().hex[:6]}"
    store = open_store(store_url)
    procs = [spawn("worker", ["worker", *ep], tmp_path / "logs")]

    async def register(expression: str):
        client = await connect(temporal_server.address)
        spec, _ = build_spec(name, expression, topic, "session_id", "ts", shards=2)
        return (await register_spec(client, store, spec))[2]

    async def remove(spec) -> int:
        return await remove_spec(await connect(temporal_server.address), store, spec)

    background = [{**r, "session_id": f"bg-{r['session_id']}"}
                  for r in generate_sessions(400, seed=31, out_of_order=0.2).to_records()]
    fresh = [{**r, "session_id": f"new-{r['session_id']}"}
             for r in generate_sessions(60, seed=32, out_of_order=0.2).to_records()]
    try:
        old = aio.run(register(OLD))
        procs.append(spawn("feeder", ["feeder", "--topic", topic, "--batch-size", "200", "--linger-ms", "50", *ep],
                           tmp_path / "logs"))
        with Load(pulsar_server.address, topic, background) as load:
            wait_for(lambda: len(store.keys(name)) > 5, timeout=120, message="the first registration's results")
            assert load.sent < len(background), "the load ended before the removal: raise its size"
            aio.run(remove(old))
            new = aio.run(register(NEW))
            assert new.generation != old.generation
            wait_for(lambda: f"generation {new.generation}" in procs[1].tail(200), timeout=60,
                     message="the feeder to notice the new registration")
            produce(pulsar_server.address, topic, [msgspec.json.encode(r) for r in fresh])
            expected = batch_timelines(NEW, fresh, "session_id", "ts")
            wait_equal(wait_for, store, name, expected, procs, timeout=240,
                       what="the new registration's results over the events produced after it")
            still_loading = load.sent < len(background)
        assert still_loading, "the load ended before the new registration was checked: raise its size"
        # Whatever the feeder re-created of the old generation meanwhile has ended by itself.
        wait_for(lambda: not _running(aio, temporal_server.address, old), timeout=120,
                 message=f"no workflow of the old generation running (still: {_running(aio, temporal_server.address, old)})")
        assert len(_running(aio, temporal_server.address, new)) == len(workflow_tree(new))
    finally:
        for p in procs:
            p.stop()
