"""Exactly once per leaf, whatever the broker redelivers (issue 9, item 1).

The real pulsar-lite broker delivers the messages; the feeder code routes and
signals them to a real worker on the real Temporal dev server. Redeliveries are
made by the broker itself (a consumer closed with nothing acknowledged gets
everything again on the next subscribe), fed in the orders that broke the old
"max position" rule: newer before older, the same position twice in one signal,
and a fresh feeder (no memory of what was sent) sending it all again.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pulsar
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.dsl.compiler import compile_expression
from timeline.dsl.limits import MAX_ALLOWED_LATENESS_S
from timeline.feeder.feeder import Feeder, FeederSettings, _message_id
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime.control import connect, node_status
from timeline.runtime.registry import build_spec, register_spec
from timeline.store import open_store

CIR = (Path(__file__).resolve().parents[2] / "examples" / "cir.tl").read_text()
SHARDS = 2


def _receive(consumer, n: int) -> list:
    out = []
    while len(out) < n:
        out.append(consumer.receive(timeout_millis=60_000))  # pulsar.Timeout: the broker did not deliver
    return out


def _counts(aio, address: str, spec, counter: str) -> dict[str, int]:
    async def go():
        client = await connect(address)
        return {leaf.id: sum([getattr(await node_status(client, spec, leaf.id, s), counter) for s in range(SHARDS)])
                for leaf in compile_expression(spec.expression).leaves}

    return aio.run(go())


def test_each_leaf_applies_exactly_the_distinct_messages(temporal_server, pulsar_server, tmp_path, wait_for, aio):
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    worker = spawn("worker", ["worker", *ep], tmp_path / "logs")
    store = open_store(store_url)
    topic, name = f"redeliver-{uuid.uuid4().hex[:8]}", f"once-{uuid.uuid4().hex[:6]}"
    records = generate_sessions(60, seed=17, out_of_order=0.2).to_records()
    n = len(records)
    produce(pulsar_server.address, topic, [msgspec.json.encode(r) for r in records])
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))

    def subscribe():
        return client.subscribe(topic, "feeder", consumer_type=pulsar.ConsumerType.Failover,
                                initial_position=pulsar.InitialPosition.Earliest, receiver_queue_size=1000)

    async def scenario():
        temporal = await connect(temporal_server.address)
        # The messages are fed newer-first on purpose: every event must count, however late.
        spec, _ = build_spec(name, CIR, topic, "session_id", "ts", shards=SHARDS,
                             allowed_lateness_s=MAX_ALLOWED_LATENESS_S)
        _, _, spec = await register_spec(temporal, store, spec)
        settings = FeederSettings(topic=topic, subscription="feeder")

        # 1. A feeder signals everything, newer messages before older ones, and dies
        #    before acknowledging anything.
        first_consumer = subscribe()
        first = _receive(first_consumer, n)
        feeder = Feeder(temporal, client, store, settings)
        assert await feeder.process(first[n // 2:]) and await feeder.process(first[:n // 2])
        first_consumer.close()

        # 2. The broker delivers all of it again to the next consumer.
        second_consumer = subscribe()
        again = _receive(second_consumer, n)
        assert sorted(map(_message_id, again)) == sorted(map(_message_id, first)), "the broker did not redeliver"

        # 3. The same positions twice within one signal (a batch holding a redelivered copy).
        twice = Feeder(temporal, client, store, settings)
        routes = twice.refresh_routes(force=True)
        buffers: dict = {}
        for msg in again[: n // 3] + again[: n // 3]:
            assert twice._route(msg, _message_id(msg), routes, buffers, []) is None
        for (_, shard), buf in buffers.items():
            await twice._send_all(routes[0], shard, buf)

        # 4. A fresh feeder (no memory of any of this) sends everything once more, and acknowledges.
        fresh = Feeder(temporal, client, store, settings)
        assert await fresh.process(again)
        for msg in again:
            second_consumer.acknowledge(msg)
        second_consumer.close()
        return spec

    try:
        spec = aio.run(scenario())
        expected = batch_timelines(CIR, records, "session_id", "ts")
        wait_equal(wait_for, store, name, expected, [worker], timeout=240)
        applied = _counts(aio, temporal_server.address, spec, "events_applied")
        assert applied == {leaf: n for leaf in applied}, f"{n} distinct messages; leaves applied {applied}"
        skipped = _counts(aio, temporal_server.address, spec, "duplicates_skipped")
        # Every leaf saw each message 3 times more (steps 1, 3 (a third, twice), 4): all skipped.
        assert skipped == {leaf: n + 2 * (n // 3) for leaf in skipped}, skipped
    finally:
        client.close()
        worker.stop()
