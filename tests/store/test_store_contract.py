"""The results store contract, on both backends: SQLite (a file) and PostgreSQL (a real
server started by the session fixture). Patches, idempotency, a root re-run after a worker
crash, registrations, and several processes publishing at once."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store import TimelineExists, UnknownTimeline, open_store
from timeline.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    s.register(_spec("t"))  # results are kept only for a registered timeline (of its generation)
    yield s
    s.close()


def _batch(seq, patches, shard=0, timeline="t", watermarks=None, closed=None, generation=""):
    return ResultsBatch(timeline=timeline, shard=shard, seq=seq, patches=patches, results_topic="r",
                        watermarks=watermarks or {}, closed=closed or {}, generation=generation)


def _spec(name="a", expression="has_existed(x == 1)"):
    return TimelineSpec(name=name, expression=expression, source_topic="t", key_path="k", time_path="ts")


def test_open_store_picks_the_backend_by_url(store, store_url):
    assert store.dialect == ("sqlite" if store_url.startswith("sqlite") else "postgresql")


def test_same_seq_again_with_more_changes_is_applied(store):
    """A root whose workflow task re-ran after a crash sends its seq again, with what
    arrived meanwhile merged in: nothing of it may be skipped."""
    first = SpanPatch(key="k", since=0, starts=[0], values=[1])
    more = SpanPatch(key="k", since=10, starts=[10], values=[2])
    store.apply_results(_batch(10, [first]))
    store.apply_results(_batch(10, [first, more]))   # the re-run: a superset
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])
    store.apply_results(_batch(10, [first, more]))   # and once more: idempotent
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_an_older_batch_is_skipped(store):
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[1])]))
    store.apply_results(_batch(6, [SpanPatch(key="k", since=10, starts=[10], values=[2])]))
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[9])]))  # late retry
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_seq_is_kept_per_shard(store):
    store.apply_results(_batch(7, [SpanPatch(key="a", since=0, starts=[0], values=[1])], shard=0))
    store.apply_results(_batch(1, [SpanPatch(key="b", since=0, starts=[0], values=[2])], shard=1))
    assert store.result("t", "b").timeline == KeyTimeline(starts=[0], values=[2])


def test_watermarks_and_closed_keys(store):
    store.apply_results(_batch(1, [SpanPatch(key="k", since=0, starts=[0], values=[1]),
                                   SpanPatch(key="j", since=0, starts=[0], values=[3])], watermarks={"k": 50}))
    got = store.result("t", "k")
    assert (got.watermark, got.closed) == (50, False)
    store.apply_results(_batch(2, [], watermarks={"k": 80}))
    assert store.result("t", "k").watermark == 80
    store.apply_results(_batch(3, [], closed={"k": KeyTimeline(starts=[0, 90], values=[1, None])}))
    got = store.result("t", "k")
    assert got.closed and got.timeline == KeyTimeline(starts=[0, 90], values=[1, None])
    assert store.keys("t") == ["j", "k"]
    assert store.keys("t", closed=True) == ["k"] and store.keys("t", closed=False) == ["j"]
    assert store.result("t", "nobody") is None
    # a key that comes back after closing is live again
    store.apply_results(_batch(4, [SpanPatch(key="k", since=100, starts=[100], values=[1])]))
    assert not store.result("t", "k").closed


def test_registrations(store):
    spec = _spec()
    assert store.register(spec) is True and store.register(spec) is False
    assert store.list() == [spec, _spec("t")] and store.get("a") == spec
    with pytest.raises(TimelineExists):
        store.register(_spec(expression="has_existed(x == 2)"))
    store.register(_spec("a-b"))
    store.register(_spec("a_b"))
    store.register(_spec("9"))
    # by code point on both backends (a PostgreSQL locale collation would sort "a_b" before "a-b")
    assert [s.name for s in store.list()] == ["9", "a", "a-b", "a_b", "t"]


def test_remove_forgets_registration_and_results(store):
    store.register(_spec("t"))
    store.apply_results(_batch(3, [SpanPatch(key="k", since=0, starts=[0], values=[1])]))
    store.remove("t")
    with pytest.raises(UnknownTimeline):
        store.get("t")
    with pytest.raises(UnknownTimeline):
        store.remove("t")
    assert store.result("t", "k") is None and store.keys("t") == []
    # registered again, it starts from seq 0: nothing of the old shard position remains
    store.register(_spec("t"))
    store.apply_results(_batch(0, [SpanPatch(key="k", since=0, starts=[0], values=[5])]))
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0], values=[5])


def test_a_name_registered_again_starts_clean(store):
    """A removed registration's workflows may still publish: nothing of theirs is stored,
    and the new registration's seq numbers start from nothing."""
    old = _spec("g").model_copy(update={"generation": "old"})
    assert store.register(old) is True
    assert store.apply_results(_batch(50, [SpanPatch(key="k", since=0, starts=[0], values=[1])], timeline="g",
                                      generation="old")) == []  # applied, nothing refused
    store.remove("g")
    assert store.apply_results(_batch(51, [SpanPatch(key="k", since=0, starts=[0], values=[7])], timeline="g",
                                      generation="old")) is None  # not registered: skipped
    assert store.keys("g") == []
    new = old.model_copy(update={"expression": "has_existed(x == 2)", "generation": "new"})
    assert store.register(new) is True
    assert store.is_current("g", "new") and not store.is_current("g", "old")
    assert store.apply_results(_batch(52, [SpanPatch(key="old", since=0, starts=[0], values=[1])], timeline="g",
                                      generation="old")) is None  # another generation's: skipped
    assert store.apply_results(_batch(1, [SpanPatch(key="k", since=0, starts=[0], values=[2])], timeline="g",
                                      generation="new")) == []
    assert store.keys("g") == ["k"] and store.result("g", "k").timeline == KeyTimeline(starts=[0], values=[2])


def test_the_same_definition_keeps_its_generation(store):
    assert store.register(_spec("g").model_copy(update={"generation": "g1"})) is True
    assert store.register(_spec("g").model_copy(update={"generation": "g2"})) is False
    assert store.get("g").generation == "g1"


def test_closed_keys_are_final_on_both_backends(store):
    """Closing merges the root's last part; a change reaching into a closed result is refused."""
    store.apply_results(_batch(1, [SpanPatch(key="a", since=0, starts=[0, 10], values=["buffer", "play"])],
                               watermarks={"a": 10}))
    assert store.apply_results(_batch(2, [], closed={"a": KeyTimeline(starts=[10], values=["play"])})) == []
    got = store.result("t", "a")
    assert got.closed and got.timeline == KeyTimeline(starts=[0, 10], values=["buffer", "play"])
    late = SpanPatch(key="a", since=5, starts=[5], values=["play"])
    assert store.apply_results(_batch(3, [late], watermarks={"a": 5})) == [late]
    assert store.result("t", "a").timeline == KeyTimeline(starts=[0, 10], values=["buffer", "play"])


def test_many_results_in_one_read(store):
    """`results` gives what `result` gives, for the keys asked (or all), without the missing ones."""
    from timeline.store.sql import KEYS_PER_STATEMENT

    names = [f"k{i:04d}" for i in range(KEYS_PER_STATEMENT + 5)]  # more than one statement's worth
    store.apply_results(_batch(1, [SpanPatch(key=k, since=i, starts=[i], values=[k]) for i, k in enumerate(names)],
                               watermarks={k: i for i, k in enumerate(names)}))
    everything = store.results("t")
    assert sorted(everything) == names
    assert all(everything[k] == store.result("t", k) for k in names)
    asked = store.results("t", [*names[::2], "nobody"])
    assert sorted(asked) == names[::2] and "nobody" not in asked
    assert asked[names[2]].timeline == KeyTimeline(starts=[2], values=[names[2]]) and asked[names[2]].watermark == 2
    assert store.results("other") == {}
    import time

    later = time.time() + 0.001
    time.sleep(0.01)
    store.apply_results(_batch(2, [SpanPatch(key=names[1], since=50, starts=[50], values=["x"])],
                               watermarks={names[1]: 50}))
    assert list(store.results("t", updated_since=later)) == [names[1]]
    assert store.results("t", names[:3], updated_since=later)[names[1]].timeline.values == [names[1], "x"]


def test_an_unknown_url_is_a_timeline_error():
    from timeline.dsl.errors import TimelineError

    with pytest.raises(TimelineError, match="sqlite:///PATH or postgresql://"):
        open_store("mysql://x/y")


def test_plain_path_is_sqlite(tmp_path):
    assert isinstance(open_store(str(tmp_path / "x.db")), SqliteStore)


# --- several writers at once ------------------------------------------------------------------------

KEYS_PER_SHARD = 6
BATCHES = 25


def _publish_shard(url: str, shard: int, start: threading.Barrier | None = None) -> None:
    """One root's stream of batches: each appends one span to each of the shard's keys."""
    store = open_store(url)
    if start is not None:
        start.wait()
    for seq in range(BATCHES):
        patches = [SpanPatch(key=f"s{shard}k{i}", since=seq * 10, starts=[seq * 10], values=[seq])
                   for i in range(KEYS_PER_SHARD)]
        store.apply_results(_batch(seq, patches, shard=shard, watermarks={p.key: seq * 10 for p in patches}))
    store.close()


def _expected_key_timeline() -> KeyTimeline:
    return KeyTimeline(starts=[s * 10 for s in range(BATCHES)], values=list(range(BATCHES)))


def test_several_processes_publish_at_once(store, store_url):
    """Workers on other hosts publish their shards' batches concurrently: every change lands."""
    shards = 4
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publish_shard, args=(store_url, shard)) for shard in range(shards)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * shards, "a publishing process failed"
    assert len(store.keys("t")) == shards * KEYS_PER_SHARD
    for key in store.keys("t"):
        assert store.result("t", key).timeline == _expected_key_timeline(), key


def test_a_late_retry_does_not_undo_the_next_batch(store, store_url):
    """An activity attempt for seq N that timed out still runs while the root already publishes
    N+1: whichever commits last, N+1's changes stay (batches of one shard apply one at a time,
    and the stale N is skipped once N+1 is in)."""
    rounds = 30
    other = open_store(store_url)

    def patch(seq):
        return [SpanPatch(key=f"k{i}", since=seq * 10, starts=[seq * 10], values=[seq]) for i in range(4)]

    for r in range(rounds):
        store.apply_results(_batch(2 * r, patch(2 * r)))
        start = threading.Barrier(2)

        def late_retry(seq=2 * r):
            start.wait()
            other.apply_results(_batch(seq, patch(seq)))

        retry = threading.Thread(target=late_retry)
        retry.start()
        start.wait()
        store.apply_results(_batch(2 * r + 1, patch(2 * r + 1)))
        retry.join(timeout=600)
    other.close()
    want = KeyTimeline(starts=[s * 10 for s in range(2 * rounds)], values=list(range(2 * rounds)))
    for i in range(4):
        assert store.result("t", f"k{i}").timeline == want, f"k{i} lost a batch to the late retry"
