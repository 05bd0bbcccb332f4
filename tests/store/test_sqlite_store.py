"""The SQLite results store: patches, idempotency, a root re-run after a worker crash."""

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store.sqlite import SqliteStore


def _batch(seq, patches):
    return ResultsBatch(timeline="t", shard=0, seq=seq, patches=patches, results_topic="r")


def test_same_seq_again_with_more_changes_is_applied(tmp_path):
    """A root whose workflow task re-ran after a crash sends its seq again, with what
    arrived meanwhile merged in: nothing of it may be skipped."""
    store = SqliteStore(tmp_path / "r.db")
    first = SpanPatch(key="k", since=0, starts=[0], values=[1])
    more = SpanPatch(key="k", since=10, starts=[10], values=[2])
    store.apply_results(_batch(10, [first]))
    store.apply_results(_batch(10, [first, more]))   # the re-run: a superset
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])
    store.apply_results(_batch(10, [first, more]))   # and once more: idempotent
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_an_older_batch_is_skipped(tmp_path):
    store = SqliteStore(tmp_path / "r.db")
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[1])]))
    store.apply_results(_batch(6, [SpanPatch(key="k", since=10, starts=[10], values=[2])]))
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[9])]))  # late retry
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_registrations(tmp_path):
    store = SqliteStore(tmp_path / "r.db")
    spec = TimelineSpec(name="a", expression="has_existed(x == 1)", source_topic="t", key_path="k", time_path="ts")
    assert store.register(spec) is True and store.register(spec) is False
    assert store.list() == [spec] and store.get("a") == spec
