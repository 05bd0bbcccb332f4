"""A closed key's stored result is final: the root's last part is merged into it, and a
change reaching into it (a key that came back with a late event, without its history)
is refused and handed back for the side output."""

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store.sqlite import SqliteStore

SPEC = TimelineSpec(name="t", expression="latest_event_to_state(s)", source_topic="e", key_path="k", time_path="t")


def _store(tmp_path) -> SqliteStore:
    """A store with the timeline registered: results of unregistered timelines are not kept."""
    store = SqliteStore(tmp_path / "r.db")
    store.register(SPEC)
    return store


def _batch(seq, patches=(), watermarks=None, closed=None):
    return ResultsBatch(timeline="t", shard=0, seq=seq, patches=list(patches), watermarks=watermarks or {},
                        closed=closed or {}, results_topic="r")


def test_closing_merges_the_roots_part_from_its_frontier(tmp_path):
    store = _store(tmp_path)
    store.apply_results(_batch(1, [SpanPatch(key="a", since=0, starts=[0, 5], values=["x", "y"])], {"a": 9}))
    # The root holds the key from its frontier (8) on only: closing must keep [0, 8).
    refused = store.apply_results(_batch(2, closed={"a": KeyTimeline(starts=[8], values=["y"])}))
    got = store.result("t", "a")
    assert refused == [] and got.closed and got.timeline == KeyTimeline(starts=[0, 5], values=["x", "y"])


def test_a_change_reaching_into_a_closed_result_is_refused(tmp_path):
    store = _store(tmp_path)
    store.apply_results(_batch(1, [SpanPatch(key="a", since=0, starts=[0, 10], values=["buffer", "play"])],
                               {"a": 10}))
    store.apply_results(_batch(2, closed={"a": KeyTimeline(starts=[0, 10], values=["buffer", "play"])}))
    final = store.result("t", "a")
    late = SpanPatch(key="a", since=5, starts=[5], values=["play"])
    assert store.apply_results(_batch(3, [late], {"a": 5})) == [late]
    assert store.apply_results(_batch(4, closed={"a": KeyTimeline(starts=[5], values=["play"])})) == []
    after = store.result("t", "a")
    assert after.closed and after.timeline == final.timeline and after.watermark == 10
    # A key that comes back after its final result continues it from there.
    assert store.apply_results(_batch(5, [SpanPatch(key="a", since=20, starts=[20], values=["seek"])],
                                      {"a": 20})) == []
    back = store.result("t", "a")
    assert not back.closed and back.timeline == KeyTimeline(starts=[0, 10, 20], values=["buffer", "play", "seek"])
