"""The pure parts of exactly once and poison handling: the leaf's position filter,
the event checks, the feeder's signal splitting."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.dsl.eventcheck import time_problem, value_problem
from timeline.dsl.limits import DEDUPE_WINDOW, MAX_SIGNAL_BYTES, MAX_TIME_MS, MIN_TIME_MS
from timeline.feeder.feeder import Feeder, _ShardBuffer
from timeline.models import AppliedPositions, NodeInput, PartitionApplied


def _deliveries(n: int, partitions: int, redeliver: float, seed: int) -> list[tuple[str, tuple[int, int, int]]]:
    """First deliveries in order per partition (as a failover subscription gives them),
    interleaved with redeliveries of any earlier message, in any order."""
    rnd = random.Random(seed)
    out, delivered = [], []
    for i in range(n):
        part = f"t#{rnd.randrange(partitions)}"
        pos = (1 + i // 5000, i, rnd.choice([-1, 0, 1]))
        out.append((part, pos))
        delivered.append((part, pos))
        while rnd.random() < redeliver:
            out.append(rnd.choice(delivered))
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6000), partitions=st.integers(1, 4), redeliver=st.floats(0, 0.8),
       seed=st.integers(0, 10**6), restart_every=st.integers(50, 5000))
def test_each_position_is_applied_exactly_once(n, partitions, redeliver, seed, restart_every):
    """However copies are interleaved, and across runs (continue-as-new carries `saved()`)."""
    applied = AppliedPositions()
    taken: list = []
    deliveries = _deliveries(n, partitions, redeliver, seed)
    for i, (part, pos) in enumerate(deliveries):
        if applied.first_time(part, pos):
            taken.append((part, pos))
        if i % restart_every == 0:  # a new run: only what was saved survives
            carried = NodeInput.model_validate_json(
                NodeInput(spec={"name": "t", "expression": "has_existed(x == 1)", "source_topic": "s",
                                "key_path": "k", "time_path": "t"}, node_id="n", shard=0,
                          applied_positions=applied.saved()).model_dump_json()).applied_positions
            applied = AppliedPositions(carried)
    assert len(taken) == len(set(taken)), "a position applied twice"
    assert set(taken) == set(deliveries), "a position never applied"


def test_the_filter_state_is_bounded():
    applied = AppliedPositions()
    for i in range(50_000):
        assert applied.first_time("t", (1, i, -1))
    saved = applied.saved()["t"]
    assert len(saved.recent) == DEDUPE_WINDOW and saved.floor == (1, 50_000 - DEDUPE_WINDOW - 1, -1)
    again = AppliedPositions({"t": PartitionApplied.model_validate(saved.model_dump())})
    assert not any(again.first_time("t", (1, i, -1)) for i in range(0, 50_000, 7))
    assert again.first_time("t", (1, 50_000, -1)) and again.first_time("t", (2, 0, -1))


def test_event_checks():
    deep: object = 1
    for _ in range(100_000):
        deep = [deep]
    assert value_problem({"x": deep}) == "event is nested deeper than 64 levels"
    assert "outside int64" in value_problem({"a": {"b": [2**63]}})
    assert value_problem({"a": -(2**63), "b": 2**63 - 1, "c": [1.5, None, True, "s"]}) is None
    assert "not finite" in value_problem({"a": float("inf")})
    assert time_problem(MIN_TIME_MS) is None and time_problem(MAX_TIME_MS) is None
    assert "out of range" in time_problem(MAX_TIME_MS + 1) and "out of range" in time_problem(MIN_TIME_MS - 1)


def test_signals_are_split_under_the_payload_budget():
    buf = _ShardBuffer([("x",)])
    sizes = [MAX_SIGNAL_BYTES // 3, 10, 10, MAX_SIGNAL_BYTES - 5, 7, *([1000] * 2000)]
    for i, size in enumerate(sizes):
        buf.add("k", i, -1, (0, i, -1), [i], None, size)
    chunks = Feeder._chunks(buf)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # consecutive, nothing left out
    assert all(sum(sizes[lo:hi]) <= MAX_SIGNAL_BYTES for lo, hi in chunks)
    assert len(Feeder._chunks(_one(100))) == 1
    # A registration's smaller budget (max_state_bytes under a server with a smaller blob limit).
    small = 150_000
    chunks = Feeder._chunks(buf, small)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all(sum(sizes[lo:hi]) <= small or hi - lo == 1 for lo, hi in chunks)


def _one(size: int) -> _ShardBuffer:
    buf = _ShardBuffer([])
    buf.add("k", 0, -1, (0, 0, -1), [], None, size)
    return buf


class _Message:
    """What the feeder reads of a Pulsar message (the rule under test is the feeder's own)."""

    def __init__(self, data: bytes, redeliveries: int = 0, entry: int = 0):
        self._data, self._redeliveries, self._entry = data, redeliveries, entry

    def data(self) -> bytes:
        return self._data

    def redelivery_count(self) -> int:
        return self._redeliveries

    def topic_name(self) -> str:
        return "t"

    def message_id(self):
        entry = self._entry

        class Id:
            def partition(self): return -1
            def ledger_id(self): return 1
            def entry_id(self): return entry
            def batch_index(self): return -1

        return Id()


class _Store:
    def list(self):
        from timeline.runtime.registry import build_spec

        return [build_spec("t", 'has_existed(x == 1)', "t", "k", "ts", shards=2)[0]]


def test_a_message_delivered_too_often_is_dead_lettered():
    from timeline.feeder.feeder import FeederSettings, _message_id

    feeder = Feeder(None, None, _Store(), FeederSettings(topic="t", max_deliveries=3))
    routes = feeder.refresh_routes(force=True)
    fine, tired = _Message(b'{"k": "a", "ts": 1, "x": 1}', 2), _Message(b'{"k": "a", "ts": 1, "x": 1}', 3, 1)
    assert feeder._route(fine, _message_id(fine), routes, {}, []) is None
    assert feeder._route(tired, _message_id(tired), routes, {}, []) == \
        "delivered 3 times without success (limit 3)"
    feeder._failures[_message_id(fine)] = 3  # failed three times here, alone, while others went through
    assert feeder._route(fine, _message_id(fine), routes, {}, []) == "delivered 3 times without success (limit 3)"
